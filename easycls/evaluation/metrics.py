"""Classification metrics, computed by scikit-learn from labels, predictions and probabilities."""
from typing import List

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

from easycls.evaluation.multilabel import format_multilabel_report


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: List[str]) -> dict:
    """Accuracy, top-k, macro/weighted precision-recall-F1, per-class table and confusion matrix."""
    labels = list(range(len(class_names)))
    y_pred = probs.argmax(axis=1)
    out = {"n_images": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred))}
    if len(class_names) >= 5:
        out["top5_accuracy"] = float(top_k_accuracy_score(y_true, probs, k=5, labels=labels))
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                     zero_division=0)
        out[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out["per_class"] = [{"class": name, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                         "support": int(support[i])} for i, name in enumerate(class_names)]
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def format_report(metrics: dict) -> str:
    """A plain-text summary and per-class table, for the terminal (multi-label metrics have their own)."""
    if metrics.get("multi_label"):
        return format_multilabel_report(metrics)
    lines = [f"images: {metrics['n_images']}", f"accuracy: {metrics['accuracy']:.4f}"]
    if "top5_accuracy" in metrics:
        lines.append(f"top-5 accuracy: {metrics['top5_accuracy']:.4f}")
    for average in ("macro", "weighted"):
        m = metrics[average]
        lines.append(f"{average:>8}: precision {m['precision']:.4f}  recall {m['recall']:.4f}  f1 {m['f1']:.4f}")
    if "ece" in metrics:
        lines.append(f"calibration: temperature {metrics['temperature']:.3f}, expected calibration error "
                     f"{metrics['ece_uncalibrated']:.4f} -> {metrics['ece']:.4f}")
    if "reject" in metrics:
        r = metrics["reject"]
        accuracy = "n/a" if r["accuracy_accepted"] is None else f"{r['accuracy_accepted']:.4f}"
        lines.append(f"reject below {r['threshold']:g}: coverage {r['coverage']:.4f} ({r['accepted']} images), "
                     f"accuracy on those {accuracy}")
    width = max(5, *(len(row["class"]) for row in metrics["per_class"]))
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    for row in metrics["per_class"]:
        lines.append(f"{row['class']:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}"
                     f"  {row['support']:7d}")
    return "\n".join(lines)
