"""Loss registry: ``CE``, ``Focalloss-<gamma>`` and ``BCE``, built on torch's losses.

Every loss takes the config's ``label_smooth`` and ``class_weight`` into account, and accepts soft targets (class
probabilities, as mixup and cutmix make) as well as class indices.
"""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from easycls.core.specs import Arg, Registry

LOSSES = Registry("loss")


def soft_targets(target: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    """Class probabilities: ``target`` itself when already soft (mixup / cutmix), else smoothed one-hot labels."""
    if target.is_floating_point():
        return target.float()
    return F.one_hot(target, classes).float() * (1 - smoothing) + smoothing / classes


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al., 2017): cross-entropy scaled by ``(1 - p_true) ** gamma``."""

    def __init__(self, gamma: float, weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        soft = soft_targets(target, logits.shape[1], self.label_smoothing)
        loss = -(soft * (1 - log_p.exp()) ** self.gamma * log_p)
        if self.weight is not None:
            loss = loss * self.weight
        return loss.sum(dim=1).mean()


class OneHotBCE(nn.Module):
    """Binary cross-entropy on one-hot (optionally smoothed) targets, one sigmoid per class.

    Smoothing ``s`` moves each target toward 1/2 (``1 - s/2`` and ``s/2``), on purpose unlike timm's
    ``BinaryCrossEntropy``, which spreads ``s / C`` as softmax cross-entropy does: every class is a separate
    yes/no question here, so it is smoothed like a two-class problem whatever the number of classes; with ``s/C``
    the negatives' targets would shrink toward 0 as classes are added. Soft targets (mixup, cutmix) pass through.
    """

    def __init__(self, weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():  # already soft (mixup / cutmix), smoothing folded in
            soft = target.float()
        else:
            soft = F.one_hot(target, logits.shape[1]).float() * (1 - self.label_smoothing) + self.label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits.float(), soft, weight=self.weight)


@LOSSES.register("CE", help="cross-entropy (torch.nn.CrossEntropyLoss)")
def _ce(weight, smoothing):
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)


@LOSSES.register("Focalloss", [Arg("gamma", float, 2.0)], example="Focalloss-2", help="focal loss")
def _focal(weight, smoothing, gamma):
    return FocalLoss(gamma, weight, smoothing)


@LOSSES.register("BCE", help="per-class sigmoid binary cross-entropy on one-hot targets")
def _bce(weight, smoothing):
    return OneHotBCE(weight, smoothing)


def list_losses() -> List[str]:
    """Names accepted by :func:`create_loss`."""
    return LOSSES.names()


def create_loss(spec: str, label_smooth: float = 0.0, class_weight: Optional[List[float]] = None) -> nn.Module:
    """Build the loss named by ``spec`` (for example ``"CE"`` or ``"Focalloss-2"``)."""
    entry, args = LOSSES.parse(spec)
    weight = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float32)
    return entry.builder(weight, label_smooth, *args)
