"""Target kinds: what a model's outputs mean. :class:`SingleLabel` (one class per image: a softmax and the top
class) and :class:`MultiLabel` (any number of labels per image: a sigmoid per class and per-class thresholds).

The builder picks the kind from the data and a checkpoint records it (``ModelMeta.multi_label``); the runner,
the predictors and the prediction writer ask the kind instead of branching: how logits become probabilities, what
counts as a training hit, what validation reports, how a temperature is fitted, which metrics evaluate computes,
and what a row of ``pre.csv`` holds.
"""
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from easycls.core.distributed import DistInfo, all_gather_rows, all_reduce_sum
from easycls.data.multilabel import joined
from easycls.evaluation import calibration, multilabel
from easycls.evaluation.metrics import compute_metrics


class SingleLabel:
    """One class per image: softmax probabilities, the top class, accuracy, macro F1 and a confusion matrix."""

    multi_label = False

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(logits, dim=1)

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training images whose top class is their label."""
        return (logits.argmax(1) == labels).sum()

    def tally(self, classes: int, device: torch.device, cfg: dict) -> "ConfusionTally":
        return ConfusionTally(classes, device, "F1" in cfg["metrics"] or cfg["monitor"] == "val_f1")

    def fit_temperature(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return calibration.fit_temperature(logits, labels)

    def metrics(self, labels: np.ndarray, probs: np.ndarray, classes: List[str], thresholds=None) -> dict:
        return compute_metrics(labels, probs, classes)

    def describe(self, target: torch.Tensor, classes: List[str]) -> str:
        """A training target in words: its class, or the two largest shares of a soft (mixed) target."""
        if not target.is_floating_point():
            return classes[int(target)]
        share, index = target.topk(2)
        if share[1] < 0.05:  # smoothing only: one class
            return classes[int(index[0])]
        return "\n".join(f"{classes[int(i)]} {float(p):.2f}" for p, i in zip(share, index))

    def prediction_header(self, classes: List[str], cfg: dict) -> List[str]:
        header = ["image_id", "label", "class_name", "confidence", "status"]
        return header + ([f"prob_{c}" for c in classes] if cfg["save_probs"] else [])

    def prediction_row(self, image_id: str, probs: np.ndarray, classes: List[str], cfg: dict, thresholds) -> list:
        label = int(probs.argmax())
        status = "rejected" if probs[label] < cfg["reject_threshold"] else "ok"
        row = [image_id, label, classes[label], f"{probs[label]:.6f}", status]
        return row + [f"{p:.6f}" for p in probs] if cfg["save_probs"] else row

    def error_row(self, image_id: str, reason: str, classes: List[str]) -> list:
        return [image_id, "", "", "", f"error: {reason}"]


class MultiLabel:
    """Any number of labels per image: a sigmoid per class; a class is predicted when its probability reaches its
    threshold. During training, hits and validation use one ``threshold`` (0.5, or the config's number); the
    per-class thresholds are tuned after each validation (``ThresholdHook``) and saved with the model."""

    multi_label = True

    def __init__(self, threshold: float = multilabel.DEFAULT_THRESHOLD):
        self.threshold = threshold

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training images whose every label is right (the exact-match count)."""
        return ((torch.sigmoid(logits.float()) >= self.threshold) == (labels > 0.5)).all(1).sum()

    def tally(self, classes: int, device: torch.device, cfg: dict) -> "ScoreTally":
        return ScoreTally(classes, self.threshold, device)

    def fit_temperature(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return multilabel.fit_temperature(logits.detach().float().cpu().numpy(), labels.cpu().numpy())

    def metrics(self, labels: np.ndarray, probs: np.ndarray, classes: List[str], thresholds) -> dict:
        return multilabel.multilabel_metrics(labels, probs, classes, thresholds)

    def describe(self, target: torch.Tensor, classes: List[str]) -> str:
        """The names of a 0/1 target's labels, or each label's share of a soft (mixed or smoothed) one."""
        if not target.is_floating_point():
            return joined(target.tolist(), classes) or "(none)"
        shown = [f"{classes[i]} {float(target[i]):.2f}" for i in torch.nonzero(target >= 0.05).flatten().tolist()]
        return "\n".join(shown[:4]) or "(none)"

    def prediction_header(self, classes: List[str], cfg: dict) -> List[str]:
        return ["image_id", "labels", "status"] + [f"prob_{c}" for c in classes]

    def prediction_row(self, image_id: str, probs: np.ndarray, classes: List[str], cfg: dict, thresholds) -> list:
        chosen = multilabel.decide(probs[None, :], thresholds)[0]
        return [image_id, joined(chosen, classes), "ok"] + [f"{p:.6f}" for p in probs]

    def error_row(self, image_id: str, reason: str, classes: List[str]) -> list:
        return [image_id, "", f"error: {reason}"] + [""] * len(classes)


def target_kind(multi_label: bool, threshold: Optional[float] = None):
    """The kind of a model: :class:`MultiLabel` (hits and validation at ``threshold``, default 0.5) or
    :class:`SingleLabel`."""
    if not multi_label:
        return SingleLabel()
    return MultiLabel(multilabel.DEFAULT_THRESHOLD if threshold is None else threshold)


class ConfusionTally:
    """Validation of a single-label model: a confusion matrix summed on the device, then over every rank."""

    def __init__(self, classes: int, device: torch.device, with_f1: bool):
        self.n, self.with_f1 = classes, with_f1
        self.confusion = torch.zeros(classes * classes, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.confusion += torch.bincount(labels * self.n + logits.argmax(1), minlength=self.n * self.n)

    def result(self, dist: DistInfo) -> dict:
        cm = all_reduce_sum(self.confusion, dist).reshape(self.n, self.n).double()
        out = {"val_acc": (cm.diag().sum() / cm.sum().clamp(min=1)).item()}
        if self.with_f1:
            out["val_f1"] = (2 * cm.diag() / (cm.sum(0) + cm.sum(1)).clamp(min=1)).mean().item()
        return out


class ScoreTally:
    """Validation of a multi-label model: every rank's probabilities and targets, then the exact-match ratio
    (``val_acc``) and samples-F1 (``val_f1``) at one threshold, and ``val_mAP``."""

    def __init__(self, classes: int, threshold: float, device: torch.device):
        self.threshold = threshold
        self.probs, self.targets = [torch.zeros(0, classes, device=device)], [torch.zeros(0, classes, device=device)]

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.probs.append(torch.sigmoid(logits.float()))
        self.targets.append(labels.float())

    def result(self, dist: DistInfo) -> dict:
        probs, targets = (all_gather_rows(torch.cat(part), dist).cpu().numpy() for part in (self.probs, self.targets))
        if not len(probs):
            return {"val_acc": 0.0, "val_f1": 0.0, "val_mAP": 0.0}
        classes = [str(k) for k in range(probs.shape[1])]
        scores = multilabel.multilabel_metrics(targets.round(), probs, classes, [self.threshold] * len(classes))
        return {"val_acc": scores["exact_match"], "val_f1": scores["samples_f1"], "val_mAP": scores["mAP"] or 0.0}
