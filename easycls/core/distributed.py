"""torch.distributed set-up from torchrun's environment, and the few collectives the runner needs."""
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional

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
    """Join the process group that torchrun describes (NCCL on CUDA, gloo on CPU); no-op when not launched so.

    On CUDA the process takes its local rank's GPU before the group's first collective, and the group is bound to
    that GPU (``device_id``): otherwise NCCL's first barrier runs every rank on GPU 0.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
            dist.init_process_group("nccl", timeout=timedelta(minutes=10),
                                    device_id=torch.device("cuda", info.local_rank))
        else:
            dist.init_process_group("gloo", timeout=timedelta(minutes=10))
    return info


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place) and return it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank: a decision all ranks take together."""
    if not info.enabled:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device), info).item())


def all_gather_rows(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, on every rank; the ranks' row counts may
    differ (validation shards are not padded)."""
    if not info.enabled:
        return tensor
    count = torch.tensor([len(tensor)], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(info.world)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in range(info.world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(c.item())] for part, c in zip(parts, counts)])


def gather_to_main(obj: Any, info: DistInfo) -> Optional[List[Any]]:
    """Every rank's picklable ``obj`` as a list in rank order on rank 0 (None on the others); ``[obj]`` alone."""
    if not info.enabled:
        return [obj]
    gathered = [None] * info.world if info.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
