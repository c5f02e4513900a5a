"""Set-up linear in the number of images (issue 21, item 4): the labels-CSV split and weights, the file check, and
the set-up benchmark."""
import json
import os
import time

import numpy as np
import pytest

from easycls.bench import setup as setup_bench
from easycls.config.loading import validate
from easycls.config.schema import defaults
from easycls.data import labels as label_csv
from easycls.data.scan import Samples
from easycls.engine import builder, splits


def csv_run(tmp_path, monkeypatch, rows):
    """The config of a labels-CSV run with val_path='' and balanced weights, whose CSV has ``rows`` rows (served
    from memory: this measures what set-up does with the rows, not the disk)."""
    rng = np.random.default_rng(0)
    samples = Samples([f"{tmp_path}/{i:07d}.png" for i in range(rows)], rng.integers(0, 10, rows).tolist(),
                      [str(c) for c in range(10)])
    monkeypatch.setattr(splits, "read_labels", lambda *args: (samples, None))
    (tmp_path / "labels.csv").write_text("image_id,label\n")
    return validate({**defaults(), "label_type": "CSV", "label_path": str(tmp_path / "labels.csv"),
                     "train_path": str(tmp_path), "val_path": "", "class_number": 10, "sample_weights": "balanced",
                     "save_dir": str(tmp_path / "out"), "cfg_verbose": False})


def best_seconds(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_the_csv_split_and_weights_grow_linearly(tmp_path, monkeypatch):
    """Rebuilding set(val_idx) for every row made 10x the rows cost about 100x the time (285 s at 100k rows)."""
    small = csv_run(tmp_path, monkeypatch, 2_000)
    small_s = best_seconds(lambda: builder.train_val_samples(small))
    large = csv_run(tmp_path, monkeypatch, 20_000)
    train, val = builder.train_val_samples(large)
    large_s = best_seconds(lambda: builder.train_val_samples(large))
    assert large_s < 30 * small_s, (small_s, large_s)
    assert len(val.paths) == 2_000 and len(train.paths) == 18_000 and not set(train.paths) & set(val.paths)
    counts = np.bincount(val.labels, minlength=10) / np.bincount(train.labels + val.labels, minlength=10)
    assert np.allclose(counts, 0.1, atol=0.002)  # stratified
    assert train.weights[:3] == [1 / (train.labels + val.labels).count(y) for y in train.labels[:3]]


def test_missing_files_lists_each_folder_once_and_looks_up_only_what_it_lacks(tmp_path, monkeypatch):
    for name in ("a/1.png", "a/2.png", "b/c/3.png", "top.png"):
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    looked_up = []
    real_isfile = os.path.isfile
    monkeypatch.setattr(label_csv.os.path, "isfile", lambda path: looked_up.append(path) or real_isfile(path))
    ids = ["a/1.png", "a/2.png", "b/c/3.png", "top.png", "a/9.png", "nowhere/1.png", "b/c"]
    assert label_csv.missing_files(str(tmp_path), ids) == ["a/9.png", "nowhere/1.png", "b/c"]
    assert sorted(looked_up) == sorted(os.path.join(str(tmp_path), i) for i in ("a/9.png", "nowhere/1.png", "b/c"))


@pytest.mark.parametrize("rows", [300])
def test_the_setup_benchmark_times_each_phase(tmp_path, rows, capsys):
    out = tmp_path / "setup.json"
    assert setup_bench.main(["--setup", "--rows", str(rows), "--dir", str(tmp_path), "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["rows"] == rows
    assert all(0 <= result[key][0] < 60 and 0 <= result[key][1] < 60 for key in setup_bench.PHASES)
    assert f"| {rows} |" in capsys.readouterr().out
    assert os.listdir(tmp_path) == ["setup.json"]  # the generated files are removed
