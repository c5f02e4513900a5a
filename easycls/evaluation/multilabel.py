"""Multi-label metrics, per-class thresholds and temperature, computed by scikit-learn and scipy.

Each image has a 0/1 target and a probability per class (a sigmoid each). A class is predicted when its probability
reaches its threshold, tuned per class on the validation set to maximise that class's F1. Nothing here counts a
negative slot as a hit: mAP, per-class and averaged F1, samples-F1 and the exact-match ratio all judge the labels
an image has (the Hamming loss, which does count every slot, is reported as a loss).
"""
import math
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from easycls.data.multilabel import joined

DEFAULT_THRESHOLD = 0.5
BINS = 15


def thresholds_for(saved: Sequence[float], classes: int, setting, scale: float = 1.0) -> np.ndarray:
    """The thresholds to apply: ``setting`` when it is a number (one for every class), else the ``saved`` per-class
    ones (0.5 each when none were saved). ``scale`` (the saved temperature over the applied one) moves saved
    thresholds to probabilities made at another temperature: ``sigmoid(logit(t) * scale)``."""
    if not isinstance(setting, str):
        return np.full(classes, float(setting))
    if len(saved) != classes:
        return np.full(classes, DEFAULT_THRESHOLD)
    return expit(logit(np.asarray(saved, dtype=float)) * scale)


def decide(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """0/1 predictions: a class is predicted when its probability reaches its threshold (one per class, or one per
    image and class)."""
    return (probs >= np.asarray(thresholds)).astype(np.int64)


def tune_thresholds(targets: np.ndarray, probs: np.ndarray) -> List[float]:
    """Per class, the threshold maximising its F1 on these images: midway between the lowest score it accepts and
    the highest one below it (the widest margin among equal F1s). A class without positives keeps 0.5."""
    out = []
    for k in range(targets.shape[1]):
        y, p = targets[:, k], probs[:, k]
        if not y.any():
            out.append(DEFAULT_THRESHOLD)
            continue
        precision, recall, cuts = precision_recall_curve(y, p)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        cut = cuts[int(f1.argmax())]
        below = p[p < cut]
        out.append(float((cut + below.max()) / 2 if len(below) else cut))
    return out


def fit_temperature(logits: np.ndarray, targets: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature in [low, high] minimising the binary cross-entropy of ``sigmoid(logits / T)`` over every
    slot (scipy's bounded scalar search over log T). When every slot is on the right side of 0.5 the validation set
    holds no evidence of how sure to be, and T stays 1."""
    logits, targets = np.asarray(logits, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if np.all((logits > 0) == (targets > 0.5)):
        return 1.0

    def nll(log_t: float) -> float:
        p = np.clip(expit(logits / math.exp(log_t)), 1e-12, 1 - 1e-12)
        return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
    found = minimize_scalar(nll, bounds=(math.log(low), math.log(high)), method="bounded",
                            options={"xatol": 1e-6})
    return math.exp(found.x)


def slot_ece(probs: np.ndarray, targets: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error over every (image, class) slot: per probability bin, the gap between the mean
    probability and the share of slots that are positive, weighted by the bin's count."""
    p, y = probs.ravel(), targets.ravel()
    index = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, p, bins) - np.bincount(index, y, bins))
    return float(gap.sum() / max(count.sum(), 1))


def multilabel_metrics(targets: np.ndarray, probs: np.ndarray, class_names: List[str],
                       thresholds: Sequence[float]) -> dict:
    """mAP (macro average precision over the classes with positives), per-class AP, precision, recall, F1, support
    and threshold; micro (OF1) and macro (CF1) averages, samples-F1, the exact-match ratio and the Hamming loss."""
    targets = np.asarray(targets, dtype=np.int64)
    predicted = decide(probs, thresholds)
    present = targets.sum(axis=0) > 0
    ap = [float(average_precision_score(targets[:, k], probs[:, k])) if present[k] else None
          for k in range(len(class_names))]
    out = {"n_images": int(len(targets)), "multi_label": True,
           "mAP": float(np.mean([a for a in ap if a is not None])) if present.any() else None,
           "samples_f1": float(f1_score(targets, predicted, average="samples", zero_division=1.0)),
           "exact_match": float(accuracy_score(targets, predicted)),
           "hamming_loss": float(hamming_loss(targets, predicted)),
           "labels_per_image": float(targets.sum(axis=1).mean()) if len(targets) else 0.0,
           "predicted_per_image": float(predicted.sum(axis=1).mean()) if len(targets) else 0.0}
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(targets, predicted, average=average, zero_division=0)
        out[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    p, r, f, support = precision_recall_fscore_support(targets, predicted, average=None, zero_division=0)
    out["per_class"] = [{"class": name, "AP": ap[i], "precision": float(p[i]), "recall": float(r[i]),
                         "f1": float(f[i]), "support": int(support[i]), "threshold": float(thresholds[i])}
                        for i, name in enumerate(class_names)]
    return out


def format_multilabel_report(metrics: dict) -> str:
    """A plain-text summary and per-class table, for the terminal."""
    lines = [f"images: {metrics['n_images']} ({metrics['labels_per_image']:.2f} labels per image, "
             f"{metrics['predicted_per_image']:.2f} predicted)",
             "mAP: " + ("n/a (no positives)" if metrics["mAP"] is None else f"{metrics['mAP']:.4f}"),
             f"samples-F1: {metrics['samples_f1']:.4f}   exact match: {metrics['exact_match']:.4f}   "
             f"Hamming loss: {metrics['hamming_loss']:.4f}"]
    for average, name in (("micro", "OF1"), ("macro", "CF1")):
        m = metrics[average]
        lines.append(f"{average:>8}: precision {m['precision']:.4f}  recall {m['recall']:.4f}  f1 {m['f1']:.4f}"
                     f"  ({name})")
    if "ece" in metrics:
        lines.append(f"calibration: temperature {metrics['temperature']:.3f}, per-slot expected calibration error "
                     f"{metrics['ece_uncalibrated']:.4f} -> {metrics['ece']:.4f}")
    width = max(5, *(len(row["class"]) for row in metrics["per_class"]))
    lines.append(f"{'class':<{width}}      AP  precision  recall      f1  support  threshold")
    for row in metrics["per_class"]:
        ap = "    n/a" if row["AP"] is None else f"{row['AP']:7.4f}"
        lines.append(f"{row['class']:<{width}}  {ap}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
                     f"{row['f1']:6.4f}  {row['support']:7d}  {row['threshold']:9.3f}")
    return "\n".join(lines)


def calibration_summary(probs: np.ndarray, targets: np.ndarray, temperature: float) -> dict:
    """The temperature and the per-slot ECE with it and without it (the logits multiplied back by T)."""
    raw = expit(logit(np.clip(probs.astype(np.float64), 1e-12, 1 - 1e-12)) * temperature)
    return {"temperature": temperature, "ece": slot_ece(probs, targets), "ece_uncalibrated": slot_ece(raw, targets)}


def plot_pr_curves(targets: np.ndarray, probs: np.ndarray, class_names: List[str], path: str,
                   thresholds: Optional[Sequence[float]] = None) -> None:
    """Precision against recall per class (with its AP) and micro-averaged, each class's threshold marked."""
    from easycls.evaluation.plots import new_figure  # late import: matplotlib, which predict does without
    fig = new_figure((7, 6))
    ax = fig.subplots()
    for k, name in enumerate(class_names):
        if not targets[:, k].any():
            continue
        precision, recall, cuts = precision_recall_curve(targets[:, k], probs[:, k])
        line, = ax.plot(recall, precision, drawstyle="steps-post", linewidth=1, alpha=0.8,
                        label=f"{name} (AP {average_precision_score(targets[:, k], probs[:, k]):.3f})")
        if thresholds is not None and len(cuts):
            at = min(int(np.searchsorted(cuts, thresholds[k])), len(cuts) - 1)
            ax.plot(recall[at], precision[at], "o", color=line.get_color(), markersize=4)
    precision, recall, _ = precision_recall_curve(targets.ravel(), probs.ravel())
    ax.plot(recall, precision, drawstyle="steps-post", color="black", linewidth=2, label="micro-average")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2 if len(class_names) > 12 else 1)
    ax.set_title("precision-recall per class (dots: the thresholds applied)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def multilabel_oof_table(image_id, folds, targets: np.ndarray, probs: np.ndarray, thresholds: np.ndarray,
                         classes: List[str]) -> pd.DataFrame:
    """One row per image of a cross-validation: its fold, true labels, the labels its fold's model predicts at that
    model's thresholds, and every class's out-of-fold probability."""
    predicted = decide(np.nan_to_num(probs, nan=-1.0), np.nan_to_num(thresholds, nan=np.inf))
    frame = pd.DataFrame({"image_id": image_id, "fold": folds,
                          "labels": [joined(row, classes) for row in targets],
                          "predicted": [joined(row, classes) for row in predicted]})
    columns = pd.DataFrame(probs, columns=[f"prob_{c}" for c in classes])
    return pd.concat([frame, columns, pd.DataFrame(targets, columns=[f"true_{c}" for c in classes])], axis=1)


def multilabel_cv_summary(oof: pd.DataFrame, classes: List[str]) -> dict:
    """mAP, samples-F1 and exact match per fold (on its own held-out images, at its model's thresholds), with their
    mean and standard deviation."""
    rows = []
    for fold, part in oof.groupby("fold"):
        targets = part[[f"true_{c}" for c in classes]].to_numpy()
        probs = part[[f"prob_{c}" for c in classes]].to_numpy()
        predicted = np.array([[c in set(p.split("|")) for c in classes] for p in part["predicted"]], dtype=np.int64)
        present = targets.sum(axis=0) > 0
        rows.append({"fold": int(fold), "images": len(part),
                     "mAP": float(np.mean([average_precision_score(targets[:, k], probs[:, k])
                                           for k in np.flatnonzero(present)])),
                     "samples_f1": float(f1_score(targets, predicted, average="samples", zero_division=1.0)),
                     "exact_match": float(accuracy_score(targets, predicted))})
    out = {"folds": rows}
    for key in ("mAP", "samples_f1", "exact_match"):
        values = np.array([row[key] for row in rows])
        out[f"{key}_mean"], out[f"{key}_std"] = float(values.mean()), float(values.std())
    return out
