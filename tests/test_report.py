"""report.html: written after training, updated by evaluate, self-contained, and rendered by a real browser."""
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import cfg_overrides, tiny_cfg
from PIL import Image

from easycls.cli.inference import evaluate_main
from easycls.cli.train import train_main


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from conftest import make_tiny_data
    root = tmp_path_factory.mktemp("report")
    data = make_tiny_data(root)
    cfg = tiny_cfg(data, root / "out", epochs=2, audit=True, eval_path=str(data / "test"))
    assert train_main(cfg_overrides(cfg)) == 0
    after_training = (root / "out" / "report.html").read_text()
    assert evaluate_main(cfg_overrides({**cfg, "show_heatmap": True})) == 0
    return root / "out" / "report.html", after_training, cfg


def test_training_writes_it_and_evaluate_updates_it(report):
    path, after_training, _ = report
    assert "Not evaluated yet" in after_training and "loss curves" in after_training
    page = path.read_text()
    for part in ("easycls run report", "Data", "Audit: 0 unreadable", "Evaluation", "Calibration",
                 "expected calibration error", "confusion matrix", "reliability diagram", "<td>left</td>"):
        assert part in page, part


def test_it_is_one_self_contained_file(report):
    page = report[0].read_text()
    assert not re.search(r"https?://|<script|<link|@import|url\(", page)
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 4 and all(s.startswith("data:image/png;base64,") for s in sources)


def test_headless_chromium_renders_it(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "report.png"
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--window-size=1100,1800", f"--screenshot={shot}", report[0].as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1800, 1100)
    assert pixels.std() > 20  # text, tables and pictures, not a blank page
    assert (pixels[:120] < 100).mean() > 0.01  # the dark heading is drawn at the top


def test_a_fresh_training_run_drops_the_old_models_evaluation(report, tmp_path):
    """Retraining in a save_dir whose eval/ and heatmaps/ would pass for the new model's: a copy of the shared one,
    so that the other tests see the fixture as it was made, in any order."""
    path, _, cfg = report
    out = tmp_path / "out"
    shutil.copytree(path.parent, out)
    assert (out / "eval" / "metrics.json").is_file() and any((out / "heatmaps").iterdir())
    assert train_main(cfg_overrides({**cfg, "epochs": 1, "save_dir": str(out)})) == 0
    assert not (out / "eval").exists() and not (out / "heatmaps").exists()
    assert "Not evaluated yet" in (out / "report.html").read_text()
