"""Confidence calibration: temperature scaling (Guo et al., 2017), expected calibration error, rejection.

A temperature ``T`` divides the logits before the softmax; it is fitted on the validation set by minimising the
negative log-likelihood, which changes no prediction, only how sure each one is.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, low: float = 0.05, high: float = 20.0,
                    xatol: float = 1e-6) -> float:
    """The temperature in [low, high] minimising the NLL of ``softmax(logits / T)`` on ``labels``.

    The NLL is convex in 1/T, so it has one minimum over log T, which scipy's bounded Brent search
    (``minimize_scalar(method="bounded")``) finds to ``xatol`` in log T with no autograd: about 12 evaluations,
    40 ms for 10,000 images of 10 classes on one core. The NLL is summed in float64: in float32 its rounding
    leaves the minimum undetermined to a few 1e-4 of T.
    When every prediction is right, the NLL only falls as T falls, and the search would end at ``low``: the
    validation set holds no evidence of how sure to be, so T stays 1.
    """
    logits, labels = logits.detach().double().cpu(), labels.detach().cpu()
    if bool((logits.argmax(1) == labels).all()):
        return 1.0
    result = minimize_scalar(lambda log_t: float(F.cross_entropy(logits / math.exp(log_t), labels)),
                             bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": xatol})
    return math.exp(result.x)


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)``: re-applies a temperature to probabilities (1/T undoes T)."""
    logp = np.log(np.clip(probs.astype(np.float64), 1e-300, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict[str, np.ndarray]:
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
