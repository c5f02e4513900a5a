"""Prediction at scale: memory that does not grow with the number of images, and whole rows after a kill."""
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, cfg_overrides, make_tiny_data, tiny_cfg, write_config

from easycls.cli.train import train_main
from easycls.config import make_config
from easycls.data.scan import scan_unlabelled
from easycls.evaluation.outputs import write_predictions
from easycls.evaluation.predictor import load_predictor

FOLDERS, PER_FOLDER = 6, 500


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    """3000 16x16 PNGs in six folders of 500, and a model trained for one epoch at that size."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(FOLDERS * PER_FOLDER):
        sub = root / "big" / f"{i // PER_FOLDER:02d}"
        if i % PER_FOLDER == 0:
            os.makedirs(sub)
        cv2.imwrite(str(sub / f"{i:05d}.png"), rng.integers(0, 255, (16, 16), dtype=np.uint8))
    cfg = tiny_cfg(make_tiny_data(root), root / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    return root, cfg


def traced_peak(cfg, folder, out):
    """Peak memory (bytes) that Python and NumPy allocate while predict's CSV writer labels ``folder``: decoded
    batches are NumPy arrays, so every batch held on to shows up here."""
    cfg = make_config(cfg, {"test_path": str(folder), "test_batch_size": 64})
    model = load_predictor(cfg)
    samples, _ = scan_unlabelled(cfg["test_path"])
    tracemalloc.start()
    try:
        rows, _ = write_predictions(model, samples, cfg, str(out), progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == len(samples.paths)
    return peak


def test_predict_memory_does_not_grow_with_the_number_of_images(many_images, tmp_path):
    """Six times the images: the peak grows by the image ids alone (measured: ~70 bytes per image), not by the
    decoded images (256 bytes each at 16x16 grey; measured: ~340 bytes per image when every batch is kept)."""
    root, cfg = many_images
    small = traced_peak(cfg, root / "big" / "00", tmp_path / "small.csv")
    large = traced_peak(cfg, root / "big", tmp_path / "large.csv")
    per_image = (large - small) / ((FOLDERS - 1) * PER_FOLDER)
    assert per_image < 160, f"{per_image:.0f} bytes more per image ({small} -> {large} bytes)"
    assert len(pd.read_csv(tmp_path / "large.csv")) == FOLDERS * PER_FOLDER


def test_a_killed_predict_leaves_whole_batches_of_rows(many_images, tmp_path):
    """kill -9 of predict.py mid-run (the process itself is the subject): pre.csv holds whole rows, in whole
    batches, because each batch is one unbuffered write."""
    root, cfg = many_images
    config = write_config(tmp_path / "cfg.py", cfg)
    args = [f"test_path={str(root / 'big')!r}", f"save_dir={str(tmp_path / 'k')!r}", "test_batch_size=16",
            f"model_path={os.path.join(cfg['save_dir'], 'best.pth')!r}"]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "predict.py"), "--config", config, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pre = tmp_path / "k" / "pre.csv"
    start = time.time()
    while (not pre.exists() or pre.stat().st_size < 2000) and time.time() - start < 120 and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "predict.py ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    text = pre.read_text()
    rows = pd.read_csv(pre)
    assert text.endswith("\n") and 16 <= len(rows) < FOLDERS * PER_FOLDER and len(rows) % 16 == 0
    assert rows["status"].eq("ok").all() and rows["label"].notna().all()
