"""Export a checkpoint for use without easycls: ONNX (onnxruntime) and TorchScript, with a parity check.

The exported graph takes float NCHW images in [0, 1] at the checkpoint's size (any batch size), normalises them
itself and returns class probabilities (a softmax, or a sigmoid per class for a multi-label model). The model's
metadata (class names, input size, channels, normalisation, temperature, and a multi-label model's per-class
thresholds) travels in the file: ONNX ``metadata_props`` and a TorchScript extra file, both under the key
``easycls``.
"""
import json
import logging
import os
import warnings
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn as nn

from easycls.core import files
from easycls.core.errors import DataError, TrainingError
from easycls.data.loaders import FileDataset
from easycls.data.scan import scan_labelled, scan_unlabelled
from easycls.evaluation.paths import path_error, problem, trained_config
from easycls.evaluation.predictor import META_KEY, InferenceModel, OnnxModel, Predictor, TorchScriptModel, require_extra

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-4
PARITY_IMAGES = 64


class Deployable(nn.Module):
    """``model`` behind its normalisation and a softmax (a sigmoid per class when ``multi_label``): [0, 1] images
    in, probabilities out."""

    def __init__(self, model: nn.Module, mean: List[float], std: List[float], channels: int,
                 temperature: float = 1.0, multi_label: bool = False):
        super().__init__()
        self.model, self.temperature, self.multi_label = model, temperature, multi_label
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model((x - self.mean) / self.std) / self.temperature
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)


def _example(model: InferenceModel, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, model.meta.channels, *model.meta.img_size)


def _deployable(model: InferenceModel) -> Deployable:
    meta = model.meta
    return Deployable(model.model, meta.mean, meta.std, meta.channels, model.temperature, meta.multi_label).eval()


def _metadata(model: InferenceModel) -> str:
    """The ModelMeta as JSON, with the temperature the graph applies (1.0 when calibrate=False) and, for a
    multi-label model, the thresholds for its probabilities (the config's ``threshold`` when it is a number)."""
    thresholds = [] if model.thresholds is None else [float(t) for t in model.thresholds]
    return json.dumps({**model.meta.to_dict(), "temperature": model.temperature, "thresholds": thresholds})


def export_onnx(model: InferenceModel, path: str) -> str:
    """Write ``path`` (.onnx, dynamic batch) with the metadata; needs the ``onnx`` extra."""
    onnx = require_extra("onnx", "onnx")
    require_extra("onnxscript", "onnx")
    net = _deployable(model)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(net, (_example(model),), input_names=["images"], output_names=["probs"],
                                dynamic_shapes={"x": {0: batch}}, dynamo=True, verbose=False)
    program.save(path)
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, _metadata(model)
    onnx.save(proto, path)
    return path


def export_torchscript(model: InferenceModel, path: str) -> str:
    """Write ``path`` (TorchScript, traced; the batch size stays free for convolutional networks)."""
    net = _deployable(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch 2.9+, still deployed
        traced = torch.jit.trace(net, _example(model))
        torch.jit.save(traced, path, _extra_files={META_KEY: _metadata(model)})
    return path


EXPORTERS = {"onnx": (export_onnx, OnnxModel), "torchscript": (export_torchscript, TorchScriptModel)}


def parity_images(cfg: dict, model: InferenceModel, count: int = PARITY_IMAGES) -> Tuple[torch.Tensor, str]:
    """``count`` uint8 images at the model's size and channels to check an export on, and what they are: up to
    ``count`` readable images from val_path, or else test_path; or else (exporting on a machine without the data)
    ``count`` seeded synthetic ones."""
    problems = []
    for key in ("val_path", "test_path"):
        try:
            samples = scan_labelled(cfg[key], model.meta.class_names) if key == "val_path" else \
                scan_unlabelled(cfg[key])[0]
        except DataError as exc:
            problems.append((key, problem(key, cfg[key]) or f"{key} {cfg[key]}: {exc}"))
            continue
        dataset = FileDataset(samples, model.meta.channels, model.meta.img_size)
        decoded = (dataset[i][0] for i in range(min(len(dataset), 4 * count)))
        images = [image for image in decoded if image is not None]
        if images:
            return torch.from_numpy(np.stack(images[:count])).permute(0, 3, 1, 2), f"images from {cfg[key]}"
    if problems:  # the run's own paths, when it was trained with others: the way to check on real images
        log.info("export parity check: %s", path_error(problems, cfg, trained_config(cfg, model)).args[0])
    return synthetic_images(model, count, cfg["random_seed"]), \
        "seeded synthetic images (val_path and test_path have no readable images)"


def synthetic_images(model: InferenceModel, count: int, seed: int) -> torch.Tensor:
    """``count`` uint8 images of uniform noise at the model's input size and channels, the same for the same
    seed."""
    generator = torch.Generator().manual_seed(seed)
    shape = (count, model.meta.channels, *model.meta.img_size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def parity(reference: Predictor, exported: Predictor, images: torch.Tensor) -> float:
    """The largest absolute difference of any class probability, in batches of two sizes (dynamic batch)."""
    worst = 0.0
    for part in (images[:1], images[1:]):
        if len(part):
            diff = (reference.probs(part).cpu().float() - exported.probs(part).cpu().float()).abs().max()
            worst = max(worst, float(diff))
    return worst


def export(model: InferenceModel, cfg: dict) -> Dict[str, float]:
    """Export in ``cfg['export_format']`` next to ``save_dir``; check each file on real images, or synthetic ones
    where there are none; return the parity figures. Raises :class:`TrainingError` when an exported model differs
    by more than ``PARITY_TOLERANCE``."""
    formats = list(EXPORTERS) if cfg["export_format"] == "all" else [cfg["export_format"]]
    images, source = parity_images(cfg, model)
    os.makedirs(cfg["save_dir"], exist_ok=True)
    results = {}
    for name in formats:
        write, load = EXPORTERS[name]
        path = write(model, files.out(cfg, files.EXPORTS[name]))
        diff = parity(model, load(path, {**cfg, "GPU_ID": "cpu", "TTA": False, "calibrate": True}), images)
        results[path] = diff
        log.info("wrote %s; parity on %d %s: max |p_exported - p_checkpoint| = %.2e", path, len(images), source,
                 diff)
        if not diff <= PARITY_TOLERANCE:
            raise TrainingError(f"{path} differs from the checkpoint by {diff:.2e} in probability (allowed: "
                                f"{PARITY_TOLERANCE:.0e}); the export is not faithful")
    return results
