"""Grad-CAM heatmaps (pytorch-grad-cam): where a model looked for the class it predicted.

The target layer is the last convolutional stage whose map is still at least 4x4 at the model's input size (timm
models list their stages in ``feature_info``; a 1x1 map says nothing about where), for other models the last
``Conv2d``; ``heatmap_layer`` names any module instead. Needs the ``gradcam`` extra.
"""
import logging
import os
from typing import List, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn

from easycls.core.errors import ConfigError
from easycls.data.loaders import FileDataset
from easycls.evaluation.predictor import InferenceModel, Predictor, require_extra

log = logging.getLogger(__name__)
VIEW_SIZE = 160  # overlays are enlarged to at least this many pixels on their short side, to be seen


MIN_MAP = 4


def target_layer(model: nn.Module, name: str = "", img_size: Sequence[int] = (224, 224)) -> nn.Module:
    """The module whose activations Grad-CAM weighs: ``name``, else the last stage with a map >= 4x4."""
    modules = dict(model.named_modules())
    if name:
        if name not in modules:
            stages = [n for n in modules if n and "." not in n]
            raise ConfigError(f"heatmap_layer {name!r} is not a module of this model; top-level modules: "
                              f"{', '.join(stages)}")
        return modules[name]
    info = getattr(model, "feature_info", None)
    if info:
        stages = [stage for stage in info if min(img_size) // stage["reduction"] >= MIN_MAP] or info[:1]
        return model.get_submodule(stages[-1]["module"])
    return [m for m in modules.values() if isinstance(m, nn.Conv2d)][-1]


def grad_cam(model: InferenceModel, images: torch.Tensor, classes: Sequence[int], layer: str = "") -> np.ndarray:
    """Heatmaps in [0, 1], ``(B, H, W)`` at the input size, for ``classes`` (one per image)."""
    cam_module = require_extra("pytorch_grad_cam", "gradcam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    x = model.preprocess(images)
    layers = [target_layer(model.model, layer, model.meta.img_size)]
    with cam_module.GradCAM(model=model.model, target_layers=layers) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """An RGB picture: the image (HWC uint8, gray or RGB) under the heatmap's JET colours, enlarged."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    scale = max(1, int(np.ceil(VIEW_SIZE / min(rgb.shape[:2]))))
    size = (rgb.shape[1] * scale, rgb.shape[0] * scale)
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST)
    heat = cv2.resize(heat.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(rgb.astype(np.float32) / 255, heat, use_rgb=True, image_weight=0.6)


def save_heatmaps(model: Predictor, dataset: FileDataset, picks: List[tuple], out_dir: str, layer: str = "") -> int:
    """Write one overlay per ``(index, class, file name)`` in ``picks`` into ``out_dir``; return how many."""
    if not isinstance(model, InferenceModel):
        raise ConfigError("show_heatmap needs one checkpoint (.pth or .safetensors) as model_path, not an exported "
                          "model or an ensemble")
    os.makedirs(out_dir, exist_ok=True)
    written = 0
    for start in range(0, len(picks), 32):
        chunk = [(dataset[i][0], c, n) for i, c, n in picks[start:start + 32]]
        chunk = [item for item in chunk if item[0] is not None]  # unreadable files have no heatmap
        if not chunk:
            continue
        arrays = [array for array, _, _ in chunk]
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        heat = grad_cam(model, images, [c for _, c, _ in chunk], layer)
        for array, h, (_, _, name) in zip(arrays, heat, chunk):
            cv2.imwrite(os.path.join(out_dir, name), cv2.cvtColor(overlay(array, h), cv2.COLOR_RGB2BGR))
            written += 1
    return written


def evaluation_picks(labels: np.ndarray, probs: np.ndarray, ids: List[str], classes: List[str], limit: int,
                     correct_per_class: int = 2) -> List[tuple]:
    """The misclassified images (most confident mistakes first, up to ``limit``) and a few correct ones per class,
    as ``(index, predicted class, file name)``."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:limit]
    picks = [(i, predicted[i], f"wrong_{rank:03d}_{classes[labels[i]]}_as_{classes[predicted[i]]}_"
              f"{flat_name(ids[i])}") for rank, i in enumerate(wrong)]
    for k, name in enumerate(classes):
        right = np.flatnonzero((predicted == labels) & (labels == k))[:correct_per_class]
        picks += [(i, k, f"right_{name}_{flat_name(ids[i])}") for i in right]
    return picks


def flat_name(image_id: str) -> str:
    """A file name from an image id: sub-folders joined with '_', always .png."""
    return os.path.splitext(image_id.replace("/", "_"))[0] + ".png"
