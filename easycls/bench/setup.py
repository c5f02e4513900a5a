"""Set-up benchmark: what a run does with its labels before it decodes an image, at 10k, 100k and 1M rows.

    python -m easycls.bench --setup                       # 10k, 100k and 1M rows (about 1 GB of empty files)
    python -m easycls.bench --setup --rows 10000 100000   # other sizes

Each size gets a folder of empty files (ten class folders, so the same files serve a class-folder scan), a labels
CSV of ``image_id,label`` for them and a weights CSV of ``image_id,weight``. Timed, each on its own: reading and
checking the labels CSV (``read_label_csv``: every id, label and file), the stratified ``val_fraction`` split, the
per-image weights from the CSV, the class-folder scan, and the whole set-up of a ``label_type='CSV'`` run with
``val_path=''`` and those weights (``builder.train_val_samples``), which is what ``train.py`` does first.
"""
import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import pandas as pd

from easycls.config.loading import validate
from easycls.config.schema import defaults
from easycls.data.labels import read_label_csv, sample_weights
from easycls.data.scan import scan_labelled
from easycls.engine import builder

CLASSES = 10
SIZES = (10_000, 100_000, 1_000_000)


def make_files(root: str, rows: int, seed: int = 0) -> dict:
    """``rows`` empty ``.png`` files under ``root/images/c<label>/``, the labels CSV and a weights CSV for them."""
    labels = np.random.default_rng(seed).integers(0, CLASSES, rows)
    ids = [f"c{label}/{i:07d}.png" for i, label in enumerate(labels)]
    images = os.path.join(root, "images")
    for label in range(CLASSES):
        os.makedirs(os.path.join(images, f"c{label}"), exist_ok=True)
    for image_id in ids:
        os.close(os.open(os.path.join(images, image_id), os.O_CREAT | os.O_WRONLY, 0o644))
    paths = {"images": images, "labels": os.path.join(root, "labels.csv"), "weights": os.path.join(root, "w.csv")}
    pd.DataFrame({"image_id": ids, "label": [f"c{label}" for label in labels]}).to_csv(paths["labels"], index=False)
    pd.DataFrame({"image_id": ids, "weight": 1.0 + labels % 3}).to_csv(paths["weights"], index=False)
    return paths


def setup_config(paths: dict, save_dir: str) -> dict:
    return validate({**defaults(), "label_type": "CSV", "label_path": paths["labels"], "train_path": paths["images"],
                     "val_path": "", "test_path": "", "class_number": CLASSES, "sample_weights": paths["weights"],
                     "save_dir": save_dir, "cfg_verbose": False})


def seconds(fn) -> list:
    """``[wall, CPU]`` seconds of one call: on a shared machine the CPU time is the steadier figure."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return [time.perf_counter() - wall, time.process_time() - cpu]


def measure(rows: int, workdir: str) -> dict:
    """The set-up timings for one size: ``[wall, CPU]`` seconds for each phase."""
    root = tempfile.mkdtemp(prefix=f"setup-{rows}-", dir=workdir)
    try:
        paths = make_files(root, rows)
        cfg = setup_config(paths, os.path.join(root, "out"))
        samples, _ = read_label_csv(paths["labels"], paths["images"])
        out = {"rows": rows,
               "read_s": seconds(lambda: read_label_csv(paths["labels"], paths["images"])),
               "split_s": seconds(lambda: builder.holdout(samples.labels, cfg["val_fraction"], cfg["random_seed"])),
               "weights_s": seconds(lambda: sample_weights(samples, paths["weights"], paths["images"])),
               "scan_s": seconds(lambda: scan_labelled(paths["images"])),
               "setup_s": seconds(lambda: builder.train_val_samples(cfg))}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


PHASES = ("read_s", "split_s", "weights_s", "scan_s", "setup_s")


def to_markdown(results: list) -> str:
    """One row per size; each cell is wall-clock seconds with CPU seconds in brackets."""
    lines = ["| CSV rows | read + check (s) | val split (s) | weights CSV (s) | folder scan (s) | whole set-up (s) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['rows']:,} | " + " | ".join(f"{r[k][0]:.2f} ({r[k][1]:.2f})" for k in PHASES) + " |")
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    """The CPU model, as lscpu names it (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m easycls.bench --setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help="this benchmark (the default one is the throughput)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(SIZES), help="CSV sizes (default: 10k 100k 1M)")
    parser.add_argument("--dir", default=None, help="where the empty files go (default: the temp folder)")
    parser.add_argument("--json", default="bench_setup.json", help="where to write the JSON result")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    results = [measure(rows, args.dir or tempfile.gettempdir()) for rows in args.rows]
    print(f"wall-clock seconds (CPU seconds) on {cpu_name()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    with open(args.json, "w") as handle:
        json.dump(results, handle, indent=2)
    print(to_markdown(results))
    return 0
