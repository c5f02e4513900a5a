"""The device rule and the autocast context, shared by training, evaluation and prediction."""
import logging
from typing import Optional

import torch

from easycls.core.distributed import DistInfo
from easycls.core.errors import ConfigError

log = logging.getLogger(__name__)


def check_gpu_id(gpu_id: str) -> None:
    """One process drives one GPU: a list such as '0,1' is an error that points to torchrun; an index must name
    one of this machine's GPUs."""
    if "," in gpu_id and gpu_id.lower() != "cpu":
        count = len([g for g in gpu_id.split(",") if g.strip()])
        raise ConfigError(f"GPU_ID={gpu_id!r} names {count} GPUs, but one process uses one GPU; to train on "
                          f"several, launch torchrun --standalone --nproc_per_node={count} train.py "
                          f"(with CUDA_VISIBLE_DEVICES={gpu_id}) and keep GPU_ID='0'")
    count = torch.cuda.device_count()
    if gpu_id.strip().isdigit() and int(gpu_id) >= count:
        raise ConfigError(f"GPU_ID={gpu_id!r} but this machine has {count} GPU(s), numbered 0..{count - 1}; "
                          f"choose one of them or 'cpu'")


def uses_cuda(cfg: dict) -> bool:
    """Whether a run of ``cfg`` runs on a GPU: CUDA is available and ``GPU_ID`` is not 'cpu'."""
    return cfg["GPU_ID"].lower() != "cpu" and torch.cuda.is_available()


def select_device(cfg: dict, dist: Optional[DistInfo] = None) -> torch.device:
    """CUDA when available and not turned off by ``GPU_ID='cpu'``; under torchrun, the local rank's GPU.

    On CUDA cuDNN benchmarks its convolution algorithms once per input shape and keeps the fastest: every image is
    resized to the model's input size, so the shapes are fixed (a short last batch adds one more).
    """
    if not uses_cuda(cfg):
        return torch.device("cpu")
    check_gpu_id(cfg["GPU_ID"])
    index = dist.local_rank if dist and dist.enabled else int(cfg["GPU_ID"] or 0)
    torch.cuda.set_device(index)
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", index)


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (NVIDIA from Ampere, compute capability 8.0, on)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def resolve_amp(setting: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype. 'auto' on CUDA: bfloat16 where the GPU has it natively (no GradScaler needed: its range
    is float32's), else float16 (with a GradScaler); on CPU nothing unless bf16 is asked for."""
    if setting == "off" or (device.type != "cuda" and setting in ("auto", "fp16")):
        if setting == "fp16":
            log.info("amp='fp16' needs CUDA; running in float32 on %s", device)
        return None
    if setting == "bf16" or (setting == "auto" and bf16_native(device)):
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast to ``dtype`` on ``device``; a no-op context when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
