"""Scheduler registry over ``torch.optim.lr_scheduler``, stepped once per epoch, with optional linear warm-up.

``default-<factor>-<patience>`` is ReduceLROnPlateau, as the seed calls it. Every scheduler is wrapped in
:class:`EpochScheduler`, so the runner calls ``step(metric)`` the same way whatever the spec.
"""
from typing import List, Optional

import torch
from torch.optim import lr_scheduler as sched

from easycls.core.specs import Arg, Registry, int_list

SCHEDULERS = Registry("scheduler")


@SCHEDULERS.register("default", [Arg("factor", float, 0.1), Arg("patience", int, 3)], example="default-0.1-3",
                     help="ReduceLROnPlateau on the monitored metric")
def _plateau(opt, epochs, mode, factor, patience):
    return sched.ReduceLROnPlateau(opt, mode=mode, factor=factor, patience=patience)


@SCHEDULERS.register("step", [Arg("step_size", int), Arg("gamma", float, 0.1)], example="step-4-0.8",
                     help="StepLR: multiply by gamma every step_size epochs")
def _step(opt, epochs, mode, step_size, gamma):
    return sched.StepLR(opt, step_size=step_size, gamma=gamma)


@SCHEDULERS.register("SGDR", [Arg("T0", int), Arg("Tmult", int, 1)], example="SGDR-5-2",
                     help="CosineAnnealingWarmRestarts")
def _sgdr(opt, epochs, mode, t0, t_mult):
    return sched.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult)


@SCHEDULERS.register("multi", [Arg("milestones", int_list), Arg("gamma", float, 0.1)], example="multi-30,60-0.1",
                     help="MultiStepLR: multiply by gamma at each milestone epoch")
def _multi(opt, epochs, mode, milestones, gamma):
    return sched.MultiStepLR(opt, milestones=milestones, gamma=gamma)


@SCHEDULERS.register("cosine", help="CosineAnnealingLR over the remaining epochs, down to 0")
def _cosine(opt, epochs, mode):
    return sched.CosineAnnealingLR(opt, T_max=max(1, epochs))


@SCHEDULERS.register("constant", help="keep the learning rate fixed")
def _constant(opt, epochs, mode):
    return sched.LambdaLR(opt, lambda epoch: 1.0)


class EpochScheduler:
    """A per-epoch scheduler with ``warmup`` epochs of linear warm-up in front of it."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec: str, epochs: int, warmup: int = 0, mode: str = "max"):
        entry, args = SCHEDULERS.parse(spec)
        self.optimizer = optimizer
        self.warmup = warmup
        self.epoch = 0
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.main = entry.builder(optimizer, epochs - warmup, mode, *args)
        self._apply_warmup()

    def _apply_warmup(self) -> None:
        if self.epoch < self.warmup:
            scale = (self.epoch + 1) / (self.warmup + 1)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * scale
        elif self.epoch == self.warmup and self.warmup:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base

    def step(self, metric: Optional[float] = None) -> None:
        """Advance one epoch; ``metric`` feeds ReduceLROnPlateau and is ignored by the others."""
        self.epoch += 1
        if self.epoch <= self.warmup:
            self._apply_warmup()
        elif isinstance(self.main, sched.ReduceLROnPlateau):
            self.main.step(metric)
        else:
            self.main.step()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "base_lrs": self.base_lrs, "main": self.main.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.base_lrs = state["epoch"], state["base_lrs"]
        self.main.load_state_dict(state["main"])


def list_schedulers() -> List[str]:
    """Names accepted by :func:`create_scheduler`."""
    return SCHEDULERS.names()


def create_scheduler(spec: str, optimizer, epochs: int, warmup: int = 0, mode: str = "max") -> EpochScheduler:
    """Build the scheduler named by ``spec`` (for example ``"SGDR-5-2"`` or ``"step-4-0.8"``)."""
    return EpochScheduler(optimizer, spec, epochs, warmup, mode)
