"""The interface every trained model shares for evaluate and predict: probabilities of uint8 batches, with TTA,
over a loader (``predict_batches``, ``evaluate``) or over images given directly (``predict``)."""
import os
from abc import ABC, abstractmethod
from typing import Iterator, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from easycls.core.checkpoints import ModelMeta
from easycls.core.errors import TrainingError
from easycls.data.images import to_array
from easycls.data.scan import FailureLog
from easycls.evaluation.multilabel import thresholds_for
from easycls.evaluation.targets import target_kind


class Predictor(ABC):
    """``probs`` of uint8 ``(B, C, H, W)`` batches, and ``predict`` / ``evaluate`` over a loader built on it."""

    meta: ModelMeta
    device: torch.device
    tta: bool = False
    temperature: float = 1.0  # the one applied to the probabilities (calibration)
    thresholds: Optional[np.ndarray] = None  # multi-label: a class is predicted when its probability reaches these
    run_config: Optional[dict] = None  # the config the model was trained with, when its file holds it

    @property
    def kind(self):
        """What the outputs mean: :class:`~easycls.evaluation.targets.SingleLabel` or ``MultiLabel``."""
        return target_kind(self.meta.multi_label)

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (``kind.activation``), averaged with the mirror image's when TTA is on."""
        probs = self._probs(images)
        if self.tta:
            probs = (probs + self._probs(images.flip(3))) / 2
        return probs

    @abstractmethod
    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities of one batch, without TTA."""

    def predict(self, images, batch_size: int = 64) -> np.ndarray:
        """Probabilities ``(N, classes)`` of images given as paths, PIL images or uint8 numpy arrays (one or a
        list), with the model's calibration and TTA; each is resized and converted as training images are."""
        if isinstance(images, (str, os.PathLike, np.ndarray, Image.Image)):
            images = [images]
        out = [np.zeros((0, len(self.meta.class_names)), dtype=np.float32)]
        for start in range(0, len(images), batch_size):
            arrays = [to_array(im, self.meta.channels, self.meta.img_size) for im in images[start:start + batch_size]]
            batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
            out.append(self.probs(batch).cpu().float().numpy())
        return np.concatenate(out)

    def predict_batches(self, loader) -> Iterator[Tuple[np.ndarray, np.ndarray, list]]:
        """Yield ``(indices, probabilities, failures)`` batch by batch; unreadable files are reported once."""
        report = FailureLog(loader)
        for batch in loader:
            report(batch.failures)
            probs = self.probs(batch.images).cpu().numpy() if len(batch.index) else np.zeros((0, 0))
            yield batch.index.numpy(), probs, batch.failures

    def evaluate(self, loader, progress: bool = False) -> dict:
        """Metrics (scikit-learn) on a labelled loader, plus the labels, probabilities and dataset indices of the
        readable images; ``progress`` shows a progress bar."""
        labels, probs, index, failures = [], [], [], []
        report = FailureLog(loader)
        for batch in tqdm(loader, total=len(loader), desc="evaluate", dynamic_ncols=True, disable=not progress):
            report(batch.failures)
            failures += batch.failures
            if len(batch.index):
                labels.append(batch.labels.numpy())
                probs.append(self.probs(batch.images).cpu().numpy())
                index.append(batch.index.numpy())
        if not labels:
            raise TrainingError("no readable images to evaluate")
        y, p = np.concatenate(labels), np.concatenate(probs)
        metrics = self.kind.metrics(y, p, self.meta.class_names, self.thresholds)
        metrics["unreadable"] = len(failures)
        return {"metrics": metrics, "labels": y, "probs": p, "index": np.concatenate(index), "failures": failures}


def applied_thresholds(meta: ModelMeta, cfg: dict, temperature: float) -> Optional[np.ndarray]:
    """Multi-label: the config's ``threshold`` when it is a number, else the saved per-class thresholds moved to
    probabilities made at ``temperature``; None for single-label models."""
    if not meta.multi_label:
        return None
    return thresholds_for(meta.thresholds, len(meta.class_names), cfg["threshold"], meta.temperature / temperature)
