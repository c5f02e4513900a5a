"""Confidence calibration: temperature scaling (Guo et al., 2017), expected calibration error, rejection.

A temperature ``T`` divides the logits before the softmax; it is fitted on the validation set by minimising the
negative log-likelihood, which changes no prediction, only how sure each one is.
"""
import math
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, low: float = 0.05, high: float = 20.0,
                    steps: int = 40) -> float:
    """The temperature in [low, high] minimising the NLL of ``softmax(logits / T)`` on ``labels``.

    The NLL is convex in 1/T, so a golden-section search over log T finds it: 40 evaluations narrow the
    interval to about 1e-8 of its width, with no autograd (about 0.1 s for 10,000 images on 2 cores).
    When every prediction is right, the NLL only falls as T falls, and the search would end at ``low``: the
    validation set holds no evidence of how sure to be, so T stays 1.
    """
    logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
    if bool((logits.argmax(1) == labels).all()):
        return 1.0
    nll = lambda log_t: float(F.cross_entropy(logits / math.exp(log_t), labels))  # noqa: E731
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return math.exp((a + b) / 2)


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)``: re-applies a temperature to probabilities (1/T undoes T)."""
    logp = np.log(np.clip(probs.astype(np.float64), 1e-300, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Dict[str, np.ndarray]:
    """Per confidence bin (equal width over [0, 1]): image count, mean top-1 confidence and accuracy."""
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    safe = np.maximum(count, 1)
    return {"count": count, "confidence": np.bincount(index, confidence, bins) / safe,
            "accuracy": np.bincount(index, correct, bins) / safe, "edges": np.linspace(0, 1, bins + 1)}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """The count-weighted mean gap between confidence and accuracy over the bins (top-1 ECE)."""
    table = reliability(probs, labels, bins)
    return float((table["count"] * np.abs(table["accuracy"] - table["confidence"])).sum() / max(len(labels), 1))


def reject_stats(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Coverage (share of images whose top probability reaches ``threshold``) and the accuracy on those."""
    accepted = probs.max(axis=1) >= threshold
    correct = probs.argmax(axis=1) == labels
    return {"threshold": threshold, "coverage": float(accepted.mean()) if len(labels) else 0.0,
            "accepted": int(accepted.sum()),
            "accuracy_accepted": float(correct[accepted].mean()) if accepted.any() else None}


def calibration_report(probs: np.ndarray, labels: np.ndarray, temperature: float, threshold: float = 0.0) -> dict:
    """ECE of ``probs`` (made with ``temperature``) and of the same predictions without it, the temperature, and
    the coverage and accuracy at ``threshold`` when it is above 0."""
    raw = soften(probs, 1.0 / temperature) if temperature != 1.0 else probs
    out = {"temperature": temperature, "ece": expected_calibration_error(probs, labels),
           "ece_uncalibrated": expected_calibration_error(raw, labels)}
    if threshold > 0:
        out["reject"] = reject_stats(probs, labels, threshold)
    return out
