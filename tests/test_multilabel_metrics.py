"""Multi-label losses, thresholds, temperature and metrics, checked against formulas and scikit-learn."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score

from easycls.config import make_config
from easycls.core.errors import ConfigError
from easycls.engine.builder import build_loss, build_mixup
from easycls.evaluation.multilabel import fit_temperature, multilabel_metrics, thresholds_for, tune_thresholds
from easycls.optim.losses import create_loss

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.5, -0.2]])
TARGETS = torch.tensor([[1, 0, 1], [0, 1, 0]])


def test_bce_smooths_multi_hot_targets_towards_half_and_weighs_positives():
    loss = create_loss("BCE", label_smooth=0.2, multi_label=True, pos_weight=[1.0, 3.0, 0.5])
    smoothed = TARGETS.float() * 0.8 + 0.1
    expected = F.binary_cross_entropy_with_logits(LOGITS, smoothed, pos_weight=torch.tensor([1.0, 3.0, 0.5]))
    assert float(loss(LOGITS, TARGETS)) == pytest.approx(float(expected), rel=1e-6)


def test_asl_is_the_papers_formula():
    gamma_neg, gamma_pos, clip = 4.0, 1.0, 0.05
    p = torch.sigmoid(LOGITS)
    p_m = (p - clip).clamp(min=0)
    y = TARGETS.float()
    per_slot = -(y * (1 - p) ** gamma_pos * torch.log(p) + (1 - y) * p_m ** gamma_neg * torch.log(1 - p_m))
    loss = create_loss(f"ASL-{gamma_neg}-{gamma_pos}-{clip}", multi_label=True)
    assert float(loss(LOGITS, TARGETS)) == pytest.approx(float(per_slot.sum(1).mean()), rel=1e-5)


def test_multilabel_focal_is_asl_with_equal_gammas_and_no_clip():
    focal = create_loss("Focalloss-2", multi_label=True)(LOGITS, TARGETS)
    p_t = torch.where(TARGETS.bool(), torch.sigmoid(LOGITS), 1 - torch.sigmoid(LOGITS))
    expected = (-(1 - p_t) ** 2 * torch.log(p_t)).sum(1).mean()
    assert float(focal) == pytest.approx(float(expected), rel=1e-5)


def test_ce_cannot_learn_several_labels_and_the_builder_trains_bce_instead():
    with pytest.raises(ConfigError, match="loss='CE'"):
        create_loss("CE", multi_label=True)
    cfg = make_config(None, {"class_weight": "balanced", "class_number": 3})
    loss = build_loss(cfg, True, 0.0, [(1, 0, 0), (1, 1, 0), (1, 0, 1), (1, 0, 0)])
    assert torch.allclose(loss.pos_weight, torch.tensor([1.0, 3.0, 3.0]))  # 'a' is always present: 1


def test_mixup_mixes_the_multi_hot_targets_of_each_pair():
    mix = build_mixup(make_config(None, {"mixup": 0.4, "label_smooth": 0.0, "class_number": 3}), 3, True)
    y = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    _, target = mix(torch.rand(4, 1, 4, 4), y)
    lam = float(target[0, 0])  # row 0 is lam * y[0] + (1 - lam) * y[3]
    assert torch.allclose(target, lam * y.float() + (1 - lam) * y.flip(0).float())


def test_thresholds_maximise_each_class_f1_midway_between_scores():
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 1], [0, 0]])
    probs = np.array([[0.9, 0.1], [0.6, 0.2], [0.4, 0.3], [0.7, 0.05], [0.1, 0.2]])
    first, second = tune_thresholds(targets, probs)
    # class 0: 0.6 and above holds both positives and one negative (F1 0.8): midway to 0.4; class 1: its positive
    # is the lowest score, so every image must pass (F1 0.33) and the threshold is that score.
    assert first == pytest.approx(0.5) and second == pytest.approx(0.05)
    assert tune_thresholds(np.zeros((3, 1), int), np.array([[0.2], [0.9], [0.4]])) == [0.5]  # no positive


def test_thresholds_follow_the_temperature_and_a_number_overrides_them():
    saved = [0.8, 0.3]
    moved = thresholds_for(saved, 2, "tuned", scale=2.0)  # saved at T=2, applied at T=1
    logits = np.array([2 * np.log(0.8 / 0.2), 2 * np.log(0.3 / 0.7)])  # exactly at the saved thresholds at T=2
    assert moved == pytest.approx(1 / (1 + np.exp(-logits)))
    assert thresholds_for(saved, 2, 0.5).tolist() == [0.5, 0.5]
    assert thresholds_for([], 2, "tuned").tolist() == [0.5, 0.5]


def test_the_temperature_fit_recovers_the_sampling_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    targets = rng.random((4000, 5)) < 1 / (1 + np.exp(-logits / 2.5))
    assert fit_temperature(logits, targets) == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(np.array([[3.0, -2.0]]), np.array([[1, 0]])) == 1.0  # no mistake, no evidence


def test_metrics_are_scikit_learns_and_never_count_empty_slots_as_hits():
    rng = np.random.default_rng(1)
    targets = (rng.random((200, 20)) < 0.05).astype(int)
    targets[np.arange(200), rng.integers(0, 20, 200)] = 1  # every image has a label, 1.9 of 20 on average
    probs = np.clip(targets * 0.6 + rng.random((200, 20)) * 0.5, 0, 1)
    m = multilabel_metrics(targets, probs, [str(k) for k in range(20)], [0.5] * 20)
    predicted = (probs >= 0.5).astype(int)
    assert m["samples_f1"] == pytest.approx(f1_score(targets, predicted, average="samples"))
    assert m["micro"]["f1"] == pytest.approx(f1_score(targets, predicted, average="micro"))
    assert m["mAP"] == pytest.approx(np.mean([average_precision_score(targets[:, k], probs[:, k]) for k in range(20)]))
    silent = multilabel_metrics(targets, np.zeros_like(probs), [str(k) for k in range(20)], [0.5] * 20)
    # predicting nothing leaves 90% of the slots right (fastai's accuracy_multi); every honest score says 0
    assert 1 - silent["hamming_loss"] > 0.9
    assert silent["samples_f1"] == silent["exact_match"] == silent["micro"]["f1"] == 0.0
