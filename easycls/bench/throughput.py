"""Benchmark: the model's pure throughput against the real pipeline's, measured in one run on one machine.

    python -m easycls.bench              # mobilenetv3_small_100, 32x32, batch 128, Fashion-MNIST folders
    python -m easycls.bench --quick      # a few seconds: a smoke test for CI
    python -m easycls.bench --data data/fashion_mnist --cache none --json out.json

Pure: the same train step (``ModelRunner.stepper``: one optimizer step) and the same forward pass, replayed
on one batch that was decoded and normalised once and stays on the device: synthetic in the sense that no loading
is involved, with the value range of real inputs. End-to-end: ``ModelRunner.onTrainStep`` with the default hooks
(the progress bar included) over a loader built from a folder of PNGs, and ``write_predictions`` (the code
behind predict.py) over the same PNGs. Pure and end-to-end chunks alternate for a few rounds after a warm-up; each
side's best round is its throughput (noise only slows a chunk down). A ratio below 0.9 means the pipeline, not the
model, is the bottleneck.
"""
import argparse
import json
import logging
import os
import platform
import resource
import tempfile
import time

import numpy as np
import torch

from easycls.config.loading import validate
from easycls.config.schema import defaults
from easycls.core.device import autocast, select_device
from easycls.data.scan import scan_unlabelled
from easycls.datasets import write_split
from easycls.engine import builder
from easycls.engine.hooks.base import Hook
from easycls.evaluation.outputs import write_predictions

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Seconds for ``repeats`` calls of ``fn``, after two warm-up calls."""
    for _ in range(2):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return time.perf_counter() - start


def bench_config(args, data: str) -> dict:
    cfg = {**defaults(), "model_name": args.model, "target_img_size": [args.size, args.size],
           "channels": args.channels, "batch_size": args.batch, "test_batch_size": args.batch,
           "train_path": os.path.join(data, "train"), "val_path": os.path.join(data, "val"),
           "test_path": os.path.join(data, "train"), "cache": args.cache, "num_workers": args.workers,
           "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile, "augment": args.augment,
           "random_erasing": args.random_erasing,
           "try_to_train_items": args.images, "class_number": 10, "save_dir": tempfile.mkdtemp(prefix="bench-"),
           "cfg_verbose": False}
    return validate(cfg)


def make_images(root: str, count: int, size: int = 28) -> str:
    """Generated 10-class PNG folders (train and val) when no real data is given."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 10
    images = rng.integers(0, 80, (count, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, :, label * 2:label * 2 + 6] = 220
    classes = [str(c) for c in range(10)]
    write_split(images, labels, classes, os.path.join(root, "train"))
    write_split(images[: max(10, count // 10)], labels[: max(10, count // 10)], classes, os.path.join(root, "val"))
    return root


class ImageCount(Hook):
    """The images the training step actually took: a short last batch and unreadable files count as they are."""

    def __init__(self):
        self.images = 0

    def after_train_iter(self, runner, batch_idx: int, batch, outputs: dict) -> None:
        self.images += len(outputs["labels"])


class Measure:
    """The pure and end-to-end workloads of one benchmark, each timed in short chunks."""

    def __init__(self, cfg: dict, args):
        self.args = args
        start = time.perf_counter()
        self.train_loader, _, classes = builder.build_train_loaders(cfg, builder.DistInfo())
        self.setup_seconds = time.perf_counter() - start
        model, meta = builder.build_model(cfg)
        meta.class_names = classes
        self.trained = ImageCount()
        cfg = {**cfg, "custom_hooks": [*cfg["custom_hooks"], self.trained]}
        self.runner = builder.build_runner(cfg, model, meta, device=select_device(cfg))
        self.cfg = cfg
        # The pure side replays one real batch, decoded and normalised once, so that it runs on the same kind
        # of input as the end-to-end side.
        batch = next(iter(self.train_loader))
        self.x = self.runner.preprocess(batch.images)
        self.y = batch.labels.to(self.runner.device)
        samples, _ = scan_unlabelled(cfg["train_path"])
        self.samples = samples.subset(range(min(len(samples.paths), args.images)))
        self.epoch = 0

    def pure_train(self) -> float:
        self.runner.model.train()
        steps = len(self.train_loader)
        return len(self.x) * steps / timed(lambda: self.runner.stepper(self.runner._net, self.x, self.y),
                                           self.runner.device, steps)

    def pure_predict(self) -> float:
        runner = self.runner

        def infer():
            with torch.inference_mode(), autocast(runner.device, runner.stepper.amp_dtype):
                runner.eval_model(self.x)

        runner.eval_model.eval()
        steps = max(3, len(self.samples.paths) // self.args.batch)
        return len(self.x) * steps / timed(infer, runner.device, steps)

    def e2e_train(self) -> float:
        self.epoch += 1
        self.train_loader.set_epoch(self.epoch)
        _sync(self.runner.device)
        start = time.perf_counter()
        self.runner.epoch, self.runner.train_batches = self.epoch, len(self.train_loader)
        self.trained.images = 0
        self.runner.call_hook("before_train_epoch")
        self.runner.onTrainStep(self.train_loader, self.epoch)
        self.runner.call_hook("after_train_epoch")
        _sync(self.runner.device)
        return self.trained.images / (time.perf_counter() - start)

    def e2e_predict(self) -> float:
        csv_path = os.path.join(self.cfg["save_dir"], "pre.csv")
        start = time.perf_counter()
        rows, _ = write_predictions(self.runner.inference(), self.samples, self.cfg, csv_path, progress=False)
        return rows / (time.perf_counter() - start)


def end_to_end(cfg: dict, args) -> dict:
    """Alternate pure and end-to-end chunks for ``args.rounds`` rounds, so that machine noise hits both alike."""
    m = Measure(cfg, args)
    m.e2e_train()  # warm-up epoch (and worker start-up) before anything is timed
    m.e2e_predict()
    rounds = {key: [] for key in ("pure_train", "e2e_train", "pure_predict", "e2e_predict")}
    for _ in range(args.rounds):
        for key in rounds:
            rounds[key].append(getattr(m, key)())
    # Noise from other tenants only ever slows a chunk down: the best round is the closest to the machine's
    # real speed, for the pure and the end-to-end side alike (as timeit takes the minimum time).
    out = {f"{key}_ips": float(max(values)) for key, values in rounds.items()}
    out["rounds_ips"] = {key: [round(v) for v in values] for key, values in rounds.items()}
    for kind in ("train", "predict"):
        out[f"{kind}_ratio"] = out[f"e2e_{kind}_ips"] / out[f"pure_{kind}_ips"]
    out.update(setup_seconds=m.setup_seconds, train_images_per_epoch=m.trained.images,
               predict_images=len(m.samples.paths), rounds=args.rounds, device=str(m.runner.device),
               amp=str(m.runner.stepper.amp_dtype), channels_last=m.runner.preprocess.channels_last,
               cache="ram" if type(m.train_loader).__name__ == "MemoryLoader" else "stream")
    return out


def to_markdown(result: dict) -> str:
    rows = [("train", result["pure_train_ips"], result["e2e_train_ips"], result["train_ratio"]),
            ("predict", result["pure_predict_ips"], result["e2e_predict_ips"], result["predict_ratio"])]
    lines = [f"{result['model']}, {result['img_size']}x{result['img_size']}, batch {result['batch']}, "
             f"{result['device']} ({result['threads']} threads), data {result['data']}, cache {result['cache']}, "
             f"workers {result['workers']}, augment {result['augment']}, random_erasing {result['random_erasing']}", "",
             "| | pure (img/s) | end-to-end (img/s) | ratio |", "|---|---|---|---|"]
    lines += [f"| {name} | {pure:.0f} | {e2e:.0f} | {ratio:.2f} |" for name, pure, e2e, ratio in rows]
    lines += ["", f"best of {result['rounds']} alternating rounds; one-time scan + decode "
              f"{result['setup_seconds']:.1f} s; peak RSS {result['peak_rss_mb']:.0f} MB"]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m easycls.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset root with train/ and val/ class folders "
                                       "(default: data/fashion_mnist if present, else generated images)")
    parser.add_argument("--json", default="bench.json", help="where to write the JSON result")
    parser.add_argument("--md", help="where to write the Markdown table (default: the JSON path with .md)")
    parser.add_argument("--model", default="mobilenetv3_small_100")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, default=6400,
                        help="images per timed chunk: one training epoch, one prediction pass")
    parser.add_argument("--rounds", type=int, default=5, help="alternating pure / end-to-end rounds")
    parser.add_argument("--cache", default="auto", choices=("auto", "ram", "none"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--amp", default="auto", choices=("auto", "fp16", "bf16", "off"))
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="keep the NCHW memory layout (channels_last is the default)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--augment", default="light",
                        choices=("none", "shift", "light", "strong", "randaugment", "trivialaugment"))
    parser.add_argument("--random-erasing", type=float, default=0.0, help="random_erasing probability")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 1 round of 384 images")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.images = 1, 384
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    default_data = os.path.join("data", "fashion_mnist")
    data = args.data or (default_data if os.path.isdir(default_data) else None)
    if data is None:
        data = make_images(tempfile.mkdtemp(prefix="bench-data-"), args.images)
    result = {"model": args.model, "img_size": args.size, "batch": args.batch, "data": data,
              "augment": args.augment, "random_erasing": args.random_erasing,
              "workers": args.workers, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "quick": args.quick}
    result.update(end_to_end(bench_config(args, data), args))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=2)
    table = to_markdown(result)
    with open(args.md or os.path.splitext(args.json)[0] + ".md", "w") as handle:
        handle.write(table)
    print(table)
    return 0


