"""The random generators a run draws from: seeding them per rank, and saving and restoring every rank's state."""
import logging
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_all(seed: int, rank: int = 0) -> None:
    """Seed torch, Python's and NumPy's generators with ``seed + rank``, so that a run repeats.

    Under torchrun each rank draws its own augmentation, dropout, Mixup and RandomErasing (as timm seeds them);
    what must agree across ranks does not use these generators: the sampler shuffles from ``random_seed`` alone,
    and DDP copies rank 0's initial weights to every rank.
    """
    torch.manual_seed(seed + rank)
    random.seed(seed + rank)
    np.random.seed(seed + rank)


def rng_state() -> dict:
    """Every random generator training draws from: torch (augmentation, dropout), the current CUDA device's, and
    Python's and NumPy's, which timm's RandomErasing and Mixup use. Stored as plain types and tensors
    (weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if isinstance(state["cuda"], list):  # checkpoints before per-rank states held every device's
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            torch.cuda.set_rng_state(state["cuda"])
    if "python" in state:  # checkpoints before these were saved hold torch's alone
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def restore_rank_rng(saved, rank: int) -> None:
    """Restore this rank's generators from a checkpoint's ``rng``: one state per rank (a dict alone in checkpoints
    written before every rank's was kept, which was rank 0's). A rank the checkpoint has no state for keeps the
    generators it was seeded with, so that ranks still draw differently."""
    states = saved if isinstance(saved, list) else [saved]
    if rank < len(states):
        set_rng_state(states[rank])
    else:
        log.warning("rank %d: the checkpoint holds the random generators of %d process(es); this rank keeps its own "
                    "seeding, so the run will not repeat an uninterrupted one exactly", rank, len(states))
