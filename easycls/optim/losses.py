"""Loss registry: ``CE``, ``Focalloss-<gamma>``, ``BCE`` and ``ASL-<gamma_neg>-<gamma_pos>-<clip>``, built on
torch's and timm's losses.

Every loss takes the config's ``label_smooth`` and ``class_weight`` into account, and accepts soft targets (class
probabilities, as mixup and cutmix make) as well as class indices. ``BCE``, ``ASL`` and ``Focalloss`` also train
multi-label models (``multi_label=True``: a sigmoid per class on 0/1 targets, one column per class); ``CE`` is
single-label only.
"""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from easycls.core.errors import ConfigError
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


def binary_targets(target: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    """0/1 targets per class, smoothed towards 0.5: class indices become one-hot, a multi-hot integer matrix stays.
    Float targets are already soft (mixup / cutmix, with the smoothing folded in) and pass unchanged."""
    if target.is_floating_point():
        return target.float()
    hot = F.one_hot(target, classes) if target.ndim == 1 else target
    return hot.float() * (1 - smoothing) + smoothing / 2


class OneHotBCE(nn.Module):
    """Binary cross-entropy, one sigmoid per class, on one-hot or multi-hot (optionally smoothed) targets; the mean
    over images and classes. ``pos_weight`` weighs each class's positive term (torch's BCEWithLogitsLoss).

    Smoothing ``s`` moves each target toward 1/2 (``1 - s/2`` and ``s/2``), on purpose unlike timm's
    ``BinaryCrossEntropy``, which spreads ``s / C`` as softmax cross-entropy does: every class is a separate
    yes/no question here, so it is smoothed like a two-class problem whatever the number of classes; with ``s/C``
    the negatives' targets would shrink toward 0 as classes are added. Soft targets (mixup, cutmix) pass through.
    """

    def __init__(self, weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0,
                 pos_weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft = binary_targets(target, logits.shape[1], self.label_smoothing)
        return F.binary_cross_entropy_with_logits(logits.float(), soft, weight=self.weight, pos_weight=self.pos_weight)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al., 2021; timm's ``AsymmetricLossMultiLabel``): per class, positives are
    focused by ``(1 - p) ** gamma_pos`` and negatives by ``p_m ** gamma_neg``, with ``p_m = max(p - clip, 0)``, so
    easy negatives, the bulk of multi-label slots, stop dominating. Summed over classes, averaged over images.
    ``gamma_neg = gamma_pos`` and ``clip = 0`` is the sigmoid focal loss."""

    def __init__(self, gamma_neg: float, gamma_pos: float, clip: float, weight: Optional[torch.Tensor] = None,
                 label_smoothing: float = 0.0, pos_weight: Optional[torch.Tensor] = None):
        super().__init__()
        from timm.loss import AsymmetricLossMultiLabel  # late import: config validation reads this registry
        self.label_smoothing = label_smoothing
        self.loss = AsymmetricLossMultiLabel(gamma_neg, gamma_pos, clip, weight=weight, pos_weight=pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, binary_targets(target, logits.shape[1], self.label_smoothing))


# Each builder takes (weight, smoothing, pos_weight, multi_label, *spec arguments).
@LOSSES.register("CE", help="cross-entropy (torch.nn.CrossEntropyLoss); single-label only")
def _ce(weight, smoothing, pos_weight, multi_label):
    if multi_label:
        raise ConfigError("loss='CE' (a softmax over the classes) cannot learn several labels per image; for "
                          "multi-label data use 'BCE', 'ASL' (e.g. 'ASL-4-0-0.05') or 'Focalloss-2'")
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)


@LOSSES.register("Focalloss", [Arg("gamma", float, 2.0)], example="Focalloss-2",
                 help="focal loss (multi-label: the sigmoid focal loss)")
def _focal(weight, smoothing, pos_weight, multi_label, gamma):
    if multi_label:
        return AsymmetricLoss(gamma, gamma, 0.0, weight, smoothing, pos_weight)
    return FocalLoss(gamma, weight, smoothing)


@LOSSES.register("BCE", help="per-class sigmoid binary cross-entropy on one-hot or multi-hot targets")
def _bce(weight, smoothing, pos_weight, multi_label):
    return OneHotBCE(weight, smoothing, pos_weight)


@LOSSES.register("ASL", [Arg("gamma_neg", float, 4.0), Arg("gamma_pos", float, 0.0), Arg("clip", float, 0.05)],
                 example="ASL-4-0-0.05", help="asymmetric loss (Ridnik et al., 2021), per-class sigmoids")
def _asl(weight, smoothing, pos_weight, multi_label, gamma_neg, gamma_pos, clip):
    return AsymmetricLoss(gamma_neg, gamma_pos, clip, weight, smoothing, pos_weight)


def list_losses() -> List[str]:
    """Names accepted by :func:`create_loss`."""
    return LOSSES.names()


def create_loss(spec: str, label_smooth: float = 0.0, class_weight: Optional[List[float]] = None,
                multi_label: bool = False, pos_weight: Optional[List[float]] = None) -> nn.Module:
    """Build the loss named by ``spec`` (for example ``"CE"``, ``"Focalloss-2"`` or ``"ASL-4-0-0.05"``); with
    ``multi_label`` a per-class sigmoid loss on 0/1 targets, ``pos_weight`` weighing each class's positives."""
    entry, args = LOSSES.parse(spec)
    weight, positive = (None if w is None else torch.tensor(w, dtype=torch.float32) for w in (class_weight, pos_weight))
    if positive is not None and not multi_label:
        raise ConfigError("pos_weight weighs the positives of multi-label classes; pass multi_label=True")
    return entry.builder(weight, label_smooth, positive, multi_label, *args)
