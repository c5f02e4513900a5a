"""Continuing a run from a checkpoint: what must match the run that saved it, the fp16 loss scale across ``amp``
settings, and the position inside an epoch that Ctrl-C interrupted."""
import logging
from typing import Optional, Tuple

import torch

from easycls.core.checkpoints import ModelMeta
from easycls.core.errors import CheckpointError

log = logging.getLogger(__name__)
RESUME_MUST_MATCH = ("model_name", "class_names", "img_size", "channels", "multi_label")
MID_EPOCH_MUST_MATCH = ("batch_size", "world")  # what puts the same images in batch k of an epoch


def check_resumable(state: dict, meta: ModelMeta, cfg: dict, world: int, path: str) -> None:
    """Raise a one-line :class:`CheckpointError` naming every key that differs from the saved run in a way a
    resume cannot bridge; a checkpoint saved in the middle of an epoch also needs the same batch size and
    number of processes."""
    if "optimizer" not in state:
        raise CheckpointError(f"{path} holds weights only (no optimizer state); resume from last.pth")
    saved, now = ModelMeta.from_dict(state["meta"], path).to_dict(), meta.to_dict()
    changed = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in RESUME_MUST_MATCH if saved[k] != now[k]]
    position = state.get("position")
    if position:
        now = {"batch_size": cfg["batch_size"], "world": world}
        changed += [f"{k}: {position[k]!r} -> {now[k]!r} (it stopped in the middle of an epoch)"
                    for k in MID_EPOCH_MUST_MATCH if position[k] != now[k]]
    if changed:
        raise CheckpointError(f"cannot resume from {path}: " + "; ".join(changed))


def restore_training_parts(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                           stepper, path: str) -> None:
    """Load a checkpoint's weights, optimizer, scheduler, loss scale and step counts (the skipped steps in a row
    too, from the position of an interrupted epoch) into the parts of the run that continues it."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    load_scaler(stepper.scaler, state["scaler"], path)
    stepper.steps = state["optimizer_steps"]
    stepper.bad_steps = state["position"]["bad_steps"] if state.get("position") else 0


def load_scaler(scaler: torch.amp.GradScaler, saved: dict, path: str) -> None:
    """Restore the fp16 loss scale; ``amp`` may differ from the saved run's (a CPU run resumed on a GPU in fp16,
    or the reverse), and then the scale starts afresh or is dropped instead of failing in GradScaler."""
    if scaler.is_enabled() and not saved:
        log.info("%s was saved without fp16 loss scaling (another amp or device); the loss scale starts afresh", path)
    elif saved and not scaler.is_enabled():
        log.info("%s was saved with fp16 loss scaling, which this run's amp does not use; its loss scale is dropped",
                 path)
    else:
        scaler.load_state_dict(saved)


def interrupted_state(state: dict, history_len: int, stopped_at: Optional[dict], cfg: dict, world: int,
                      bad_steps: int) -> Tuple[dict, str]:
    """``state`` labelled as interrupted, and where: after a whole epoch (``stopped_at`` {}), or after a step with
    its ``position`` (the epoch, the next batch, the epoch's running sums, and what must match to continue)."""
    state = {**state, "epoch": history_len - 1, "interrupted": True}  # the last whole epoch
    if not stopped_at:
        return state, f"after epoch {history_len}"
    state["position"] = {**stopped_at, "batch_size": cfg["batch_size"], "world": world, "bad_steps": bad_steps}
    return state, f"in epoch {stopped_at['epoch'] + 1} after batch {stopped_at['batch']}"
