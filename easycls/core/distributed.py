"""torch.distributed set-up from torchrun's environment, and the few collectives the runner needs."""
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; ``world == 1`` outside torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env(use_cuda: bool) -> DistInfo:
    """Join the process group that torchrun describes (NCCL on CUDA, gloo on CPU); no-op when not launched so."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=10))
    return info


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place) and return it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's rows of ``tensor`` (ranks may hold different counts), concatenated in rank order."""
    if not info.enabled:
        return tensor
    counts = torch.zeros(info.world, dtype=torch.long, device=tensor.device)
    counts[info.rank] = len(tensor)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    padded = tensor.new_zeros((int(counts.max()), *tensor.shape[1:]))
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in range(info.world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(n)] for part, n in zip(parts, counts)])


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
