"""Shared fixtures: tiny generated image folders, the real digits data, and a fast config."""
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

# One intra-op thread for torch, here and in every process a test starts: the suite's tensors are tiny, and on
# 2 shared cores a second thread only adds waits (a 2-epoch tiny run measured 1.8-2.3 s with 1 thread against
# 5.1-10.5 s with 2 on a loaded machine). Set before any test module imports torch; an explicit setting wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["left", "middle", "right"]


def write_images(root, classes=CLASSES, per_class=12, size=16, seed=0, mode="L", ext=".png"):
    """Class k has a bright vertical bar at position k: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size), dtype=np.uint8)
            start = k * size // len(classes)
            img[:, start:start + size // len(classes)] = 230
            pil = Image.fromarray(img, "L").convert(mode)
            pil.save(os.path.join(root, name, f"{i:03d}{ext}"))
    return root


def make_tiny_data(root):
    """train/val/test class folders of 16x16 bar images under ``root/data``."""
    for split, seed, n in (("train", 0, 16), ("val", 1, 6), ("test", 2, 6)):
        write_images(str(root / "data" / split), per_class=n, seed=seed)
    return root / "data"


@pytest.fixture
def tiny_data(tmp_path):
    return make_tiny_data(tmp_path)


@pytest.fixture(autouse=True)
def _easycls_loggers_enabled():
    """Every test starts with the library's loggers on and without a command's console handler. import-linter's
    ``lint_imports`` (test_layout.py) runs ``logging.config.dictConfig``, which disables every logger that exists
    then: the library's would stay silent for the rest of the session, and a later test reading a log line would
    fail only in the whole suite."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split(".")[0] == "easycls" and isinstance(logger, logging.Logger):
            logger.disabled = False
    # A command run in-process by an earlier test left its console handler (on that test's captured stdout, now
    # closed) and propagate=False: a process runs one command, so each test starts as a fresh process would.
    root = logging.getLogger("easycls")
    root.handlers = [h for h in root.handlers if not getattr(h, "easycls_console", False)]
    root.propagate = True


@pytest.fixture
def easycls_log():
    """The messages the library logs during the test, at INFO and above. The ``easycls`` logger itself, since once
    a command has run in this process it no longer propagates to pytest's handlers."""
    messages = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("easycls")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def tiny_cfg(data, save_dir, **extra):
    cfg = dict(model_name="test_resnet", class_number=3, train_path=str(data / "train"), val_path=str(data / "val"),
               test_path=str(data / "test"), target_img_size=[16, 16], channels=1, epochs=3, batch_size=16,
               learning_rate=0.01, scheduler="constant", num_workers=0, save_dir=str(save_dir), cfg_verbose=False,
               augment="none", test_batch_size=32)
    cfg.update(extra)
    return cfg


def cfg_overrides(cfg):
    return [f"{k}={v!r}" for k, v in cfg.items()]


def write_config(path, cfg):
    path.write_text("cfg = " + repr(cfg) + "\n")
    return str(path)


def run_script(script, *args, cwd=None, timeout=300):
    """Run a root script the way a user does; return the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def resumable_cfg(data, out, epochs=8):
    return tiny_cfg(data, out, epochs=epochs, augment="light", optimizer="AdamW", scheduler="cosine",
                    dropout=0.1, early_stop_patience=0)


def wait_for_rows(path, rows, proc, timeout=120):
    start = time.time()
    while time.time() - start < timeout and proc.poll() is None:
        if os.path.exists(path) and len(open(path).read().strip().splitlines()) - 1 >= rows:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {rows} rows")
