"""A trained model for evaluate and predict: no optimizer, scheduler, loss or hooks.

``InferenceModel.from_checkpoint`` rebuilds the network a checkpoint describes; the runner's validation,
``ModelRunner.evaluate`` and ``ModelRunner.predict`` use the same class around their ``eval_model``.
"""
import logging
from typing import Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoints import ModelMeta, load_checkpoint, split_checkpoint
from .data import FailureLog, Preprocessor
from .device import autocast, resolve_amp, select_device
from .errors import TrainingError
from .metrics import compute_metrics

log = logging.getLogger(__name__)


class InferenceModel:
    """A network in eval mode with its preprocessing, autocast and optional flip TTA."""

    def __init__(self, model: nn.Module, meta: ModelMeta, preprocess: Preprocessor,
                 amp_dtype: Optional[torch.dtype] = None, tta: bool = False):
        self.model, self.meta, self.preprocess = model.eval(), meta, preprocess
        self.amp_dtype, self.tta = amp_dtype, tta
        self.device = preprocess.device

    @classmethod
    def from_checkpoint(cls, path: str, cfg: dict) -> "InferenceModel":
        """The model saved at ``path`` (.pth, or .safetensors + .json) on the config's device; the checkpoint's
        metadata, not the config, defines the network, its input size and its normalisation."""
        from .models import create_model  # imports timm: only when a network must be built
        weights, meta = split_checkpoint(load_checkpoint(path), path)
        model = create_model(meta.model_name, len(meta.class_names), meta.channels)
        model.load_state_dict(weights)
        device = select_device(cfg)
        model = model.to(device, memory_format=torch.channels_last if cfg["channels_last"] else torch.preserve_format)
        preprocess = Preprocessor(meta.mean, meta.std, meta.channels, device, cfg["channels_last"])
        return cls(model, meta, preprocess, resolve_amp(cfg["amp"], device), cfg["TTA"])

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """float32 logits for a uint8 ``(B, C, H, W)`` batch."""
        x = self.preprocess(images)
        if flip:
            x = x.flip(3)
        with autocast(self.device, self.amp_dtype):
            return self.model(x).float()

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities, averaged with the mirror image's when TTA is on."""
        probs = F.softmax(self.logits(images), dim=1)
        if self.tta:
            probs = (probs + F.softmax(self.logits(images, flip=True), dim=1)) / 2
        return probs

    def predict(self, loader) -> Iterator[Tuple[np.ndarray, np.ndarray, list]]:
        """Yield ``(indices, probabilities, failures)`` batch by batch; unreadable files are reported once."""
        report = FailureLog(loader)
        for batch in loader:
            report(batch.failures)
            probs = self.probs(batch.images).cpu().numpy() if len(batch.index) else np.zeros((0, 0))
            yield batch.index.numpy(), probs, batch.failures

    def evaluate(self, loader) -> dict:
        """Metrics (scikit-learn) on a labelled loader, plus the per-image labels and probabilities."""
        labels, probs, failures = [], [], []
        report = FailureLog(loader)
        for batch in loader:
            report(batch.failures)
            failures += batch.failures
            if len(batch.index):
                labels.append(batch.labels.numpy())
                probs.append(self.probs(batch.images).cpu().numpy())
        if not labels:
            raise TrainingError("no readable images to evaluate")
        y, p = np.concatenate(labels), np.concatenate(probs)
        metrics = compute_metrics(y, p, self.meta.class_names)
        metrics["unreadable"] = len(failures)
        return {"metrics": metrics, "labels": y, "probs": p, "failures": failures}
