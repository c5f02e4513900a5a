"""Trained models for evaluate and predict: no optimizer, scheduler, loss or hooks.

:class:`InferenceModel` wraps a network (rebuilt from a checkpoint, or the runner's ``eval_model``);
:class:`OnnxModel` and :class:`TorchScriptModel` (:mod:`easycls.evaluation.exported`) run files written by
``export.py`` and never import timm or build a network; :class:`Ensemble` averages several. All share
:class:`~easycls.evaluation.base.Predictor`'s ``predict`` and ``evaluate``. This module also finds and loads the
model files the commands name.
"""
import glob
import logging
import os
from typing import AbstractSet, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from easycls.core import files
from easycls.core.checkpoints import ModelMeta, load_checkpoint, split_checkpoint
from easycls.core.device import autocast, resolve_amp, select_device
from easycls.core.errors import ConfigError
from easycls.data.images import image_size
from easycls.data.loaders import FileDataset, PrefetchLoader, Preprocessor
from easycls.data.scan import Samples
from easycls.evaluation.base import Predictor, applied_thresholds
from easycls.evaluation.exported import (
    META_KEY,
    OnnxModel,
    TorchScriptModel,
    onnx_device,
    onnx_providers,
    require_extra,
)
from easycls.models.aliases import MODEL_ALIASES
from easycls.models.auto import AUTO

log = logging.getLogger(__name__)

__all__ = ["META_KEY", "Ensemble", "InferenceModel", "OnnxModel", "Predictor", "TorchScriptModel", "adapt_images",
           "applied_thresholds", "checkpoint_path", "inference_loader", "load_one", "load_predictor", "model_paths",
           "onnx_device", "onnx_providers", "report_conflicts", "require_extra"]


class InferenceModel(Predictor):
    """A network in eval mode with its preprocessing, autocast and optional flip TTA.

    ``model`` is the plain module (export, heatmaps and checkpoints use it); ``net`` is what :meth:`logits` calls:
    ``model`` compiled when ``compile=True``, else ``model`` itself.
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, preprocess: Preprocessor,
                 amp_dtype: Optional[torch.dtype] = None, tta: bool = False, temperature: float = 1.0,
                 thresholds: Optional[np.ndarray] = None, net: Optional[nn.Module] = None):
        self.model, self.meta, self.preprocess = model.eval(), meta, preprocess
        self.net = model if net is None else net
        self.amp_dtype, self.tta, self.temperature, self.thresholds = amp_dtype, tta, temperature, thresholds
        self.device = preprocess.device

    @classmethod
    def from_checkpoint(cls, path: str, cfg: dict, device: Optional[torch.device] = None) -> "InferenceModel":
        """The model saved at ``path`` (.pth, or .safetensors + .json) on ``device`` (default: the config's); the
        checkpoint's metadata, not the config, defines the network, its input size and its normalisation."""
        from easycls.models.factory import create_model  # imports timm: only when a network must be built
        state = load_checkpoint(path)
        weights, meta = split_checkpoint(state, path)
        model = create_model(meta.model_name, len(meta.class_names), meta.channels)
        model.load_state_dict(weights)
        device = device or select_device(cfg)
        model = model.to(device, memory_format=torch.channels_last if cfg["channels_last"] else torch.preserve_format)
        preprocess = Preprocessor(meta.mean, meta.std, meta.channels, device, cfg["channels_last"])
        temperature = meta.temperature if cfg["calibrate"] else 1.0
        loaded = cls(model, meta, preprocess, resolve_amp(cfg["amp"], device), cfg["TTA"], temperature,
                     applied_thresholds(meta, cfg, temperature), torch.compile(model) if cfg["compile"] else None)
        loaded.run_config = state.get("config")
        return loaded

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """float32 logits for a uint8 ``(B, C, H, W)`` batch."""
        x = self.preprocess(images)
        if flip:
            x = x.flip(3)
        with autocast(self.device, self.amp_dtype):
            return self.net(x).float()

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        return self.kind.activation(self.logits(images) / self.temperature)


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


def report_conflicts(cfg: dict, meta: ModelMeta, given: AbstractSet[str]) -> None:
    """Say in one line which of the config values the caller set (``given``) the model file overrides; its own
    values always win, and defaults the caller never set are not worth a word."""
    pairs = {"model_name": (meta.model_name, MODEL_ALIASES.get(cfg["model_name"], cfg["model_name"])),
             "class_number": (len(meta.class_names), cfg["class_number"]),
             "target_img_size": (meta.img_size, list(image_size(cfg))), "channels": (meta.channels, cfg["channels"])}
    differ = [f"{key}={value!r} differs from the model's {saved!r}" for key, (saved, value) in pairs.items()
              if key in given and value is not None and saved != value
              and not (key == "model_name" and value == AUTO)]  # 'auto' chose the saved model
    if differ:
        log.warning("config %s; using the model's", "; ".join(differ))


def load_predictor(cfg: dict, given: AbstractSet[str] = frozenset()) -> Predictor:
    """The model(s) at ``model_path`` (default ``save_dir/best.pth``); a list of paths is an :class:`Ensemble`.
    ``given``: the config keys the caller set, compared with what the model file defines."""
    paths = model_paths(cfg)
    models = [load_one(path, cfg) for path in paths]
    for path, model in zip(paths, models):
        meta = model.meta
        log.info("loaded %s: %s, %d classes, %s px, %d channel(s)", path, meta.model_name, len(meta.class_names),
                 "x".join(map(str, meta.img_size)), meta.channels)
    model = models[0] if len(models) == 1 else Ensemble(models, paths)
    if len(models) == 1:
        report_conflicts(cfg, model.meta, given)
    return model


def inference_loader(samples: Samples, model: Predictor, cfg: dict) -> PrefetchLoader:
    """A streaming loader at the model's size and channels, in file order; it decodes ahead on a GPU only."""
    dataset = FileDataset(samples, model.meta.channels, model.meta.img_size)
    ahead = 4 if model.device.type == "cuda" else 0
    return PrefetchLoader(dataset, cfg["test_batch_size"], cfg["num_workers"], ahead)
