"""Models exported by ``export.py``, run without timm or a network definition: ONNX files through onnxruntime and
TorchScript files through torch.jit. Each carries its ModelMeta (classes, size, normalisation, temperature)."""
import json
import logging
import warnings
from typing import List

import numpy as np
import torch

from easycls.core.checkpoints import ModelMeta
from easycls.core.device import select_device
from easycls.core.errors import CheckpointError, ConfigError
from easycls.evaluation.base import Predictor, applied_thresholds

log = logging.getLogger(__name__)

META_KEY = "easycls"  # where an exported file keeps its ModelMeta, as JSON


class OnnxModel(Predictor):
    """A ``.onnx`` file from ``export.py`` run by onnxruntime: on the CUDA provider for the GPU that ``GPU_ID``
    names when onnxruntime has one and ``GPU_ID`` is not 'cpu', else on the CPU."""

    def __init__(self, path: str, cfg: dict):
        ort = require_extra("onnxruntime", "onnx")
        self.device = onnx_device(cfg["GPU_ID"], ort.get_available_providers())
        self.session = ort.InferenceSession(path, providers=onnx_providers(self.device))
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = _exported_meta(props.get(META_KEY), path)
        self.input = self.session.get_inputs()[0].name
        self.tta = cfg["TTA"]
        self.temperature = _baked_temperature(self.meta, cfg, path)
        self.thresholds = applied_thresholds(self.meta, cfg, self.temperature)

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        x = images.numpy().astype(np.float32) / 255.0
        return torch.from_numpy(self.session.run(None, {self.input: x})[0])


def onnx_device(gpu_id: str, available: List[str]) -> torch.device:
    """The device ONNX Runtime runs on: ``cuda:GPU_ID`` when its CUDA provider is there, else the CPU."""
    if gpu_id.lower() == "cpu" or "CUDAExecutionProvider" not in available:
        return torch.device("cpu")
    return torch.device("cuda", int(gpu_id or 0))


def onnx_providers(device: torch.device) -> list:
    """ONNX Runtime's providers for ``device``, the CPU's always last (for the operators CUDA lacks)."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"]


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
