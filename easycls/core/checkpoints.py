"""Reading and writing checkpoints safely: ``weights_only`` loads, safetensors, atomic and durable writes."""
import json
import logging
import os
import pickle
import tempfile
import zipfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Dict, List, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from easycls.core.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class ModelMeta:
    """What a checkpoint needs besides its weights to be used alone; saved in every checkpoint as a plain dict."""

    model_name: str
    class_names: List[str]
    img_size: List[int]
    channels: int
    mean: List[float]
    std: List[float]
    temperature: float = 1.0  # fitted on the validation set after each epoch when calibrate=True
    multi_label: bool = False  # several labels per image: a sigmoid per class instead of a softmax
    thresholds: List[float] = field(default_factory=list)  # multi-label: per class, tuned on val ([]: 0.5 each)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, meta: dict, path: str) -> "ModelMeta":
        """The metadata saved in the checkpoint at ``path``; a missing field means it is no easycls checkpoint."""
        missing = [f.name for f in fields(cls) if f.name not in meta and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise CheckpointError(f"{path} is not an easycls checkpoint (no {', '.join(missing)} metadata); "
                                  f"use it as 'pretrained' instead")
        return cls(**{f.name: meta[f.name] for f in fields(cls) if f.name in meta})


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path: str, write) -> None:
    """Call ``write(tmp_path)``, fsync it, then ``os.replace`` it onto ``path``.

    The old file stays intact if anything fails, a full disk included; the temp file is removed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600, and safetensors' save_file replaces the file with a new 0600 one: after writing,
        # give the output the usual permissions, as open() does
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as exc:
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}; the previous file is unchanged") \
            from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(state: dict, path: str) -> None:
    """Atomically save a checkpoint dict with ``torch.save``."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def save_safetensors(weights: Dict[str, torch.Tensor], meta: dict, path: str) -> None:
    """Save weights as ``path`` (.safetensors) and ``meta`` as a JSON sidecar next to it."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
    sidecar = os.path.splitext(path)[0] + ".json"
    save_json(meta, sidecar)


def save_json(obj, path: str) -> None:
    """Atomically write ``obj`` as indented JSON (values JSON cannot hold are written as strings)."""
    def write(tmp):
        with open(tmp, "w") as handle:
            json.dump(obj, handle, indent=2, default=str)
    atomic_write(path, write)


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint without running any code: ``weights_only=True``, or safetensors plus its JSON sidecar."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        return _load_safetensors_pair(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refusing to load {path}: it holds objects other than plain weights and data, "
                              f"which could run code ({str(exc).splitlines()[0][:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path} is damaged or truncated and cannot be read "
                              f"({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a dict of weights")
    return state


def _load_safetensors_pair(path: str) -> dict:
    try:
        weights = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({exc})") from None
    sidecar = os.path.splitext(path)[0] + ".json"
    meta = {}
    if os.path.isfile(sidecar):
        with open(sidecar) as handle:
            meta = json.load(handle)
    return {"model": weights, "meta": meta}


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a plain state_dict file, or of the ``model`` / ``state_dict`` entry of a checkpoint."""
    state = load_checkpoint(path)
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors; expected a state_dict or a dict with a 'model' key")
    return tensors


def split_checkpoint(state: dict, path: str) -> Tuple[Dict[str, torch.Tensor], ModelMeta]:
    """The weights to predict with and the metadata (model name, classes, size, channels, normalisation).

    When validation used other weights than the trained ones (the EMA average), a training checkpoint
    (``last.pth``) holds those under ``eval_model``: evaluate and predict use them, as validation did.
    """
    if "model" not in state:
        raise CheckpointError(f"{path} is not an easycls checkpoint (no model weights); use it as 'pretrained' "
                              f"instead")
    return state.get("eval_model") or state["model"], ModelMeta.from_dict(state.get("meta") or {}, path)
