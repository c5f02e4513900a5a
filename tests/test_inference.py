"""Prediction at scale: flat memory and whole rows after a kill."""
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, cfg_overrides, tiny_cfg, write_config

from easycls.cli.train import train_main


# ----------------------------------------------------------------------------- predict at scale
@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(20000):
        sub = root / "big" / f"{i // 1000:02d}"
        if i % 1000 == 0:
            os.makedirs(sub)
        cv2.imwrite(str(sub / f"{i:05d}.png"), rng.integers(0, 255, (8, 8), dtype=np.uint8))
    return root


def predict_rss(cfg_path, folder, out):
    """Peak RSS (MB) of predict.py over ``folder``."""
    code = ("import resource, sys; sys.argv = ['predict.py'] + sys.argv[1:]; from easycls.cli import predict_main; "
            "code = predict_main(); print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
            "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, "--config", cfg_path, f"test_path={str(folder)!r}",
                             f"save_dir={str(out)!r}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split("RSS")[-1]) / 1024


def test_predict_memory_stays_flat_and_a_kill_leaves_whole_rows(many_images, tiny_data, tmp_path):
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=1, target_img_size=[8, 8], test_batch_size=64)
    assert train_main(cfg_overrides(cfg)) == 0
    config = write_config(tmp_path / "cfg.py", cfg)
    small = predict_rss(config, many_images / "big" / "00", tmp_path / "o")
    large = predict_rss(config, many_images / "big", tmp_path / "o")
    assert large <= 1.2 * small, (small, large)
    assert len(pd.read_csv(tmp_path / "o" / "pre.csv")) == 20000
    args = [f"test_path={str(many_images / 'big')!r}", f"save_dir={str(tmp_path / 'k')!r}", "test_batch_size=16",
            f"model_path={str(tmp_path / 'o' / 'best.pth')!r}"]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "predict.py"), "--config", config, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pre = tmp_path / "k" / "pre.csv"
    start = time.time()
    while (not pre.exists() or pre.stat().st_size < 20000) and time.time() - start < 60:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    text = pre.read_text()
    assert text.endswith("\n") and 100 < len(text.splitlines()) < 20001
    rows = pd.read_csv(pre)
    assert rows["status"].eq("ok").all() and rows["label"].notna().all()
