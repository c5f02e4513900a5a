"""Trained models for evaluate and predict: no optimizer, scheduler, loss or hooks.

:class:`InferenceModel` wraps a network (rebuilt from a checkpoint, or the runner's ``eval_model``);
:class:`OnnxModel` and :class:`TorchScriptModel` run files written by ``export.py`` and never import timm or build
a network. All three share :class:`Predictor`'s ``predict`` and ``evaluate``.
"""
import glob
import json
import logging
import os
import warnings
from abc import ABC, abstractmethod
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from easycls.core import files
from easycls.core.checkpoints import ModelMeta, load_checkpoint, split_checkpoint
from easycls.core.device import autocast, resolve_amp, select_device
from easycls.core.errors import CheckpointError, ConfigError, TrainingError
from easycls.data.images import image_size, to_array
from easycls.data.loaders import FileDataset, PrefetchLoader, Preprocessor
from easycls.data.scan import FailureLog, Samples
from easycls.evaluation.multilabel import thresholds_for
from easycls.evaluation.targets import target_kind
from easycls.models.factory import MODEL_ALIASES

log = logging.getLogger(__name__)
META_KEY = "easycls"  # where an exported file keeps its ModelMeta, as JSON


class Predictor(ABC):
    """``probs`` of uint8 ``(B, C, H, W)`` batches, and ``predict`` / ``evaluate`` over a loader built on it."""

    meta: ModelMeta
    device: torch.device
    tta: bool = False
    temperature: float = 1.0  # the one applied to the probabilities (calibration)
    thresholds: Optional[np.ndarray] = None  # multi-label: a class is predicted when its probability reaches these

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

    def evaluate(self, loader) -> dict:
        """Metrics (scikit-learn) on a labelled loader, plus the labels, probabilities and dataset indices of the
        readable images."""
        labels, probs, index, failures = [], [], [], []
        report = FailureLog(loader)
        for batch in loader:
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


class InferenceModel(Predictor):
    """A network in eval mode with its preprocessing, autocast and optional flip TTA."""

    def __init__(self, model: nn.Module, meta: ModelMeta, preprocess: Preprocessor,
                 amp_dtype: Optional[torch.dtype] = None, tta: bool = False, temperature: float = 1.0,
                 thresholds: Optional[np.ndarray] = None):
        self.model, self.meta, self.preprocess = model.eval(), meta, preprocess
        self.amp_dtype, self.tta, self.temperature, self.thresholds = amp_dtype, tta, temperature, thresholds
        self.device = preprocess.device

    @classmethod
    def from_checkpoint(cls, path: str, cfg: dict) -> "InferenceModel":
        """The model saved at ``path`` (.pth, or .safetensors + .json) on the config's device; the checkpoint's
        metadata, not the config, defines the network, its input size and its normalisation."""
        from easycls.models.factory import create_model  # imports timm: only when a network must be built
        weights, meta = split_checkpoint(load_checkpoint(path), path)
        model = create_model(meta.model_name, len(meta.class_names), meta.channels)
        model.load_state_dict(weights)
        device = select_device(cfg)
        model = model.to(device, memory_format=torch.channels_last if cfg["channels_last"] else torch.preserve_format)
        preprocess = Preprocessor(meta.mean, meta.std, meta.channels, device, cfg["channels_last"])
        temperature = meta.temperature if cfg["calibrate"] else 1.0
        return cls(model, meta, preprocess, resolve_amp(cfg["amp"], device), cfg["TTA"], temperature,
                   applied_thresholds(meta, cfg, temperature))

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """float32 logits for a uint8 ``(B, C, H, W)`` batch."""
        x = self.preprocess(images)
        if flip:
            x = x.flip(3)
        with autocast(self.device, self.amp_dtype):
            return self.model(x).float()

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        return self.kind.activation(self.logits(images) / self.temperature)


class OnnxModel(Predictor):
    """A ``.onnx`` file from ``export.py`` run by onnxruntime (CUDA provider when available and not GPU_ID='cpu')."""

    def __init__(self, path: str, cfg: dict):
        ort = require_extra("onnxruntime", "onnx")
        want_cuda = cfg["GPU_ID"].lower() != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = (["CUDAExecutionProvider"] if want_cuda else []) + ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, providers=providers)
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = _exported_meta(props.get(META_KEY), path)
        self.input = self.session.get_inputs()[0].name
        self.device, self.tta = torch.device("cuda" if want_cuda else "cpu"), cfg["TTA"]
        self.temperature = _baked_temperature(self.meta, cfg, path)
        self.thresholds = applied_thresholds(self.meta, cfg, self.temperature)

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        x = images.numpy().astype(np.float32) / 255.0
        return torch.from_numpy(self.session.run(None, {self.input: x})[0])


class TorchScriptModel(Predictor):
    """A TorchScript ``.pt`` file from ``export.py``: the network with its normalisation, [0, 1] input."""

    def __init__(self, path: str, cfg: dict):
        extra = {META_KEY: ""}
        self.device = select_device(cfg)
        with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated; it is still what many deploy
            warnings.simplefilter("ignore", FutureWarning)
            self.module = torch.jit.load(path, map_location=self.device, _extra_files=extra).eval()
        self.meta, self.tta = _exported_meta(extra[META_KEY], path), cfg["TTA"]
        self.temperature = _baked_temperature(self.meta, cfg, path)
        self.thresholds = applied_thresholds(self.meta, cfg, self.temperature)

    @torch.inference_mode()
    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.to(self.device).float() / 255.0).float()


def _exported_meta(text, path: str) -> ModelMeta:
    if not text:
        raise CheckpointError(f"{path} was not written by easycls export.py (no '{META_KEY}' metadata)")
    return ModelMeta.from_dict(json.loads(text), path)


class Ensemble(Predictor):
    """The mean of several models' probabilities. Each member keeps its own input size, channels, normalisation,
    TTA and temperature: batches are decoded once at the largest size (RGB when any member is RGB) and resized or
    converted per member."""

    def __init__(self, members: List[Predictor], paths: List[str]):
        names = [(m.meta.class_names, m.meta.multi_label) for m in members]
        if any(n != names[0] for n in names):
            odd = next(p for p, n in zip(paths, names) if n != names[0])
            raise ConfigError(f"cannot ensemble: {odd} has (classes, multi_label) {names[paths.index(odd)]} but "
                              f"{paths[0]} has {names[0]}")
        self.members, first = members, members[0].meta
        size = max((m.meta.img_size for m in members), key=lambda hw: hw[0] * hw[1])
        channels = max(m.meta.channels for m in members)
        self.meta = ModelMeta("ensemble of " + ", ".join(m.meta.model_name for m in members), first.class_names,
                              list(size), channels, first.mean, first.std, multi_label=first.multi_label)
        self.device = members[0].device
        self.thresholds = np.mean([m.thresholds for m in members], axis=0) if first.multi_label else None

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.probs(adapt_images(images, m.meta)).cpu().float() for m in self.members]).mean(0)


def adapt_images(images: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """``(B, C, H, W)`` images at ``meta``'s channels (ITU-R 601 luma for RGB -> gray) and size (antialiased),
    in the input's dtype: uint8 batches stay uint8 (rounded), float ones stay float."""
    if images.shape[1] == meta.channels and list(images.shape[2:]) == list(meta.img_size):
        return images
    x = images.float()
    if x.shape[1] == 3 and meta.channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).reshape(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and meta.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if list(x.shape[2:]) != list(meta.img_size):
        x = F.interpolate(x, size=tuple(meta.img_size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else x


def applied_thresholds(meta: ModelMeta, cfg: dict, temperature: float) -> Optional[np.ndarray]:
    """Multi-label: the config's ``threshold`` when it is a number, else the saved per-class thresholds moved to
    probabilities made at ``temperature``; None for single-label models."""
    if not meta.multi_label:
        return None
    return thresholds_for(meta.thresholds, len(meta.class_names), cfg["threshold"], meta.temperature / temperature)


def _baked_temperature(meta: ModelMeta, cfg: dict, path: str) -> float:
    if not cfg["calibrate"] and meta.temperature != 1.0:
        log.warning("%s has the calibration temperature %.3f in its graph; calibrate=False cannot remove it",
                    path, meta.temperature)
    return meta.temperature


def require_extra(module: str, extra: str):
    """Import an optional dependency, or fail in one line naming the extra that provides it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f'{module} is not installed: pip install -e ".[{extra}]"') from None


# ----------------------------------------------------------------------------- loading for the commands
def checkpoint_path(cfg: dict, path: Optional[str] = None) -> str:
    path = path or cfg["model_path"] or files.out(cfg, files.BEST)
    if not os.path.exists(path):
        raise ConfigError(f"model_path {path} does not exist; train first or set model_path=<checkpoint>")
    return path


def model_paths(cfg: dict) -> List[str]:
    """The model files evaluate and predict use: every fold's ``best.pth`` with ``merge=True``; else ``model_path``
    (one path or a list), else ``save_dir/best.pth``."""
    if cfg["merge"]:
        paths = sorted(glob.glob(os.path.join(cfg["save_dir"], "fold*", files.BEST)))
        if not paths:
            raise ConfigError(f"merge=True but {cfg['save_dir']} has no fold*/best.pth; train with val_path='' first")
        return paths
    paths = cfg["model_path"] if isinstance(cfg["model_path"], list) else [cfg["model_path"] or None]
    return [checkpoint_path(cfg, path) for path in paths]


def load_one(path: str, cfg: dict) -> Predictor:
    """One model file: a checkpoint, or an exported ``.onnx`` / TorchScript ``.pt``."""
    kind = {".onnx": OnnxModel, ".pt": TorchScriptModel}.get(os.path.splitext(path)[1].lower())
    return kind(path, cfg) if kind else InferenceModel.from_checkpoint(path, cfg)


def report_conflicts(cfg: dict, meta: ModelMeta) -> None:
    """Say which config values the model file overrides (its own values always win)."""
    pairs = {"model_name": (meta.model_name, MODEL_ALIASES.get(cfg["model_name"], cfg["model_name"])),
             "class_number": (len(meta.class_names), cfg["class_number"]),
             "target_img_size": (meta.img_size, list(image_size(cfg))), "channels": (meta.channels, cfg["channels"])}
    for key, (saved, value) in pairs.items():
        if saved != value:
            log.warning("config %s=%r differs from the model's %r; using the model's", key, value, saved)


def load_predictor(cfg: dict) -> Predictor:
    """The model(s) at ``model_path`` (default ``save_dir/best.pth``); a list of paths is an :class:`Ensemble`."""
    paths = model_paths(cfg)
    models = [load_one(path, cfg) for path in paths]
    for path, model in zip(paths, models):
        meta = model.meta
        log.info("loaded %s: %s, %d classes, %s px, %d channel(s)", path, meta.model_name, len(meta.class_names),
                 "x".join(map(str, meta.img_size)), meta.channels)
    model = models[0] if len(models) == 1 else Ensemble(models, paths)
    if len(models) == 1:
        report_conflicts(cfg, model.meta)
    return model


def inference_loader(samples: Samples, model: Predictor, cfg: dict) -> PrefetchLoader:
    """A streaming loader at the model's size and channels, in file order; it decodes ahead on a GPU only."""
    dataset = FileDataset(samples, model.meta.channels, model.meta.img_size)
    ahead = 4 if model.device.type == "cuda" else 0
    return PrefetchLoader(dataset, cfg["test_batch_size"], cfg["num_workers"], ahead)
