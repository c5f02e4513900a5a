"""Temperature scaling, ECE and rejection: the math on known answers, then as a user meets them."""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import cfg_overrides, tiny_cfg

from easycls.cli.inference import evaluate_main, predict_main
from easycls.cli.train import train_main
from easycls.evaluation.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    reject_stats,
    soften,
)


def sampled(temperature, n=20000, classes=5, seed=0):
    """Logits, and labels drawn from softmax(logits / temperature): that temperature is the calibrated one."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=gen) * 3
    labels = torch.multinomial(torch.softmax(logits / temperature, 1), 1, generator=gen).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fitted_temperature_recovers_the_true_one(true_t):
    assert fit_temperature(*sampled(true_t)) == pytest.approx(true_t, rel=0.05)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fitted_temperature_is_where_the_float64_nll_stops_falling(true_t):
    """The NLL's slope in log T at the fit is ~0 (5e-8 here; the float32 golden-section search it replaced left
    1e-5 to 7e-5, its rounding hiding the minimum)."""
    logits, labels = sampled(true_t)
    log_t = torch.tensor(math.log(fit_temperature(logits, labels)), dtype=torch.float64, requires_grad=True)
    F.cross_entropy(logits.double() / log_t.exp(), labels).backward()
    assert abs(float(log_t.grad)) < 1e-6


@pytest.mark.parametrize("true_t,bound", [(60.0, 20.0), (0.01, 0.05)])
def test_a_temperature_beyond_the_bounds_stops_at_the_bound(true_t, bound):
    logits, labels = sampled(true_t, n=5000)
    assert not bool((logits.argmax(1) == labels).all())
    assert fit_temperature(logits, labels) == pytest.approx(bound, rel=1e-4)


def test_a_validation_set_without_mistakes_keeps_temperature_1():
    """All right: the NLL falls all the way to the search's lower bound (it gave 0.05, a 20x sharpening, on the
    default digits run); one mistake makes the fit informative again."""
    logits, _ = sampled(1.0, n=500)
    labels = logits.argmax(1)
    assert fit_temperature(logits, labels) == 1.0
    labels[0] = (labels[0] + 1) % 5
    assert fit_temperature(logits, labels) < 1.0


def test_soften_applies_and_undoes_a_temperature():
    logits, _ = sampled(1.0, n=10)
    p = torch.softmax(logits, 1).numpy()
    assert np.allclose(soften(p, 2.0), torch.softmax(logits / 2, 1).numpy(), atol=1e-9)
    assert np.allclose(soften(soften(p, 2.0), 0.5), p, atol=1e-9)


def test_ece_is_small_when_calibrated_and_temperature_lowers_it():
    logits, labels = sampled(2.0)
    overconfident = torch.softmax(logits, 1).numpy()
    calibrated = torch.softmax(logits / 2.0, 1).numpy()
    assert expected_calibration_error(calibrated, labels.numpy()) < 0.02
    assert expected_calibration_error(overconfident, labels.numpy()) > 0.1
    report = calibration_report(calibrated, labels.numpy(), 2.0, threshold=0.5)
    assert report["ece_uncalibrated"] == pytest.approx(expected_calibration_error(overconfident, labels.numpy()))
    assert 0 < report["reject"]["coverage"] < 1


def test_reject_stats_count_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]])
    stats = reject_stats(probs, np.array([0, 1, 1, 0]), 0.7)
    assert stats == {"threshold": 0.7, "coverage": 0.5, "accepted": 2, "accuracy_accepted": 1.0}


def test_training_stores_a_temperature_that_evaluate_and_predict_apply(tiny_data, tmp_path, capsys):
    # Two val images under the wrong class: a validation set without mistakes would keep T at 1.
    for name, wrong in (("left", "right"), ("right", "middle")):
        image = min((tiny_data / "val" / name).iterdir())
        image.rename(tiny_data / "val" / wrong / ("mislabelled_" + image.name))
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=3, eval_path=str(tiny_data / "test"))
    assert train_main(cfg_overrides(cfg)) == 0
    meta = torch.load(tmp_path / "o" / "best.pth", weights_only=True)["meta"]
    best = json.loads((tmp_path / "o" / "best.json").read_text())
    assert meta["temperature"] != 1.0 and best["temperature"] == pytest.approx(meta["temperature"])
    assert evaluate_main(cfg_overrides({**cfg, "reject_threshold": 0.9})) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "o" / "eval" / "metrics.json").read_text())
    assert metrics["temperature"] == pytest.approx(meta["temperature"])
    assert {"ece", "ece_uncalibrated"} <= set(metrics) and metrics["reject"]["threshold"] == 0.9
    assert "expected calibration error" in out and "reject below 0.9" in out
    assert os.path.getsize(tmp_path / "o" / "eval" / "reliability.png") > 0
    probs = {}
    for calibrate in (True, False):
        assert predict_main(cfg_overrides({**cfg, "calibrate": calibrate, "save_probs": True})) == 0
        probs[calibrate] = pd.read_csv(tmp_path / "o" / "pre.csv").filter(like="prob_").to_numpy()
    assert np.allclose(soften(probs[False], meta["temperature"]), probs[True], atol=1e-5)


def test_predict_marks_low_confidence_rows_rejected(tiny_data, tmp_path):
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    assert predict_main(cfg_overrides({**cfg, "reject_threshold": 0.999})) == 0
    pre = pd.read_csv(tmp_path / "o" / "pre.csv")
    rejected = pre["status"] == "rejected"
    assert rejected.any() and (pre.loc[rejected, "confidence"] < 0.999).all()
    assert (pre.loc[~rejected, "confidence"] >= 0.999).all() and pre["label"].notna().all()
