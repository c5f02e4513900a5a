"""Scheduler registry over ``torch.optim.lr_scheduler``, stepped once per epoch, with optional linear warm-up.

``default-<factor>-<patience>`` is ReduceLROnPlateau, as the seed calls it. Every scheduler is wrapped in
:class:`EpochScheduler`, so the runner calls ``step(metric)`` the same way whatever the spec.

A run with ``time_budget`` uses :class:`TimeScheduler` instead: the same shapes (cosine, linear, one-cycle,
constant) as a function of the share of the run done, set before every iteration.
"""
import math
from typing import Callable, Dict, List, Optional

import torch
from torch.optim import lr_scheduler as sched

from easycls.core.errors import CheckpointError, ConfigError
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


@SCHEDULERS.register("linear", help="LinearLR: from the learning rate down to 0 over the remaining epochs")
def _linear(opt, epochs, mode):
    return sched.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=max(1, epochs))


@SCHEDULERS.register("onecycle", [Arg("pct_start", float, 0.3)], example="onecycle-0.3",
                     help="OneCycleLR: up from lr/25 to lr over pct_start of the epochs, then down to lr/25e4")
def _onecycle(opt, epochs, mode, pct_start):
    return sched.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=max(2, epochs),
                            pct_start=pct_start)


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
        _check_kind(state, "main", "was trained with a time_budget; resume it with one")
        self.epoch, self.base_lrs = state["epoch"], state["base_lrs"]
        self.main.load_state_dict(state["main"])


def _check_kind(state: dict, key: str, advice: str) -> None:
    """A one-line error when a checkpoint's scheduler state is of the other kind (per epoch / over time)."""
    if key not in state:
        raise CheckpointError(f"cannot resume: the checkpoint {advice}, or start a new run (resume=False)")


def _one_cycle(p: float, pct_start: float) -> float:
    """torch's OneCycleLR (cosine phases, div_factor 25, final_div_factor 1e4) as a factor of the peak rate."""
    low, floor = 1 / 25, 1 / 25e4
    if p < pct_start:
        return low + (1 - low) * (1 - math.cos(math.pi * p / pct_start)) / 2
    q = (p - pct_start) / max(1 - pct_start, 1e-12)
    return floor + (1 - floor) * (1 + math.cos(math.pi * q)) / 2


# The learning-rate factor at progress p in [0, 1] (1 = the end of the run) of each shape a time budget plans.
SHAPES: Dict[str, Callable[..., float]] = {
    "cosine": lambda p: (1 + math.cos(math.pi * p)) / 2,
    "linear": lambda p: 1 - p,
    "onecycle": _one_cycle,
    "constant": lambda p: 1.0,
}
WARMUP_START = 0.01  # the warm-up's first factor: the first batch does not train at a rate of 0


def time_shape(spec: str) -> str:
    """The shape a time budget plans for ``spec``, or a :class:`ConfigError` for a spec planned in epochs."""
    entry, _ = SCHEDULERS.parse(spec)
    if entry.name.lower() not in SHAPES:
        raise ConfigError(f"scheduler {spec!r} is planned in epochs; with time_budget use one of "
                          f"{', '.join(repr(s) for s in SHAPES)} (the learning rate follows it over time)")
    return entry.name.lower()


class TimeScheduler:
    """The learning rate as a function of the run's progress ``p`` (0 at the first batch, 1 when the time budget or
    the epochs run out), set by :meth:`set_progress` before every iteration.

    ``warmup`` (a share of p) ramps the rate up linearly in front of the shape; ``onecycle`` has its own ramp
    (``pct_start``) and takes none. Cosine and linear end at 0, one-cycle at lr / 25e4.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, spec: str, warmup: float = 0.0):
        self.shape, self.args = time_shape(spec), SCHEDULERS.parse(spec)[1]
        self.optimizer = optimizer
        self.warmup = 0.0 if self.shape == "onecycle" else warmup
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.progress = 0.0
        self.set_progress(0.0)

    def factor(self, p: float) -> float:
        """The learning rate at progress ``p`` as a share of the configured one."""
        p = min(max(p, 0.0), 1.0)
        if p < self.warmup:
            return SHAPES[self.shape](0.0, *self.args) * (WARMUP_START + (1 - WARMUP_START) * p / self.warmup)
        rest = (p - self.warmup) / (1 - self.warmup)
        return SHAPES[self.shape](rest, *self.args)

    def set_progress(self, p: float) -> None:
        """Set every parameter group's learning rate for progress ``p``."""
        self.progress = p
        scale = self.factor(p)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale

    def state_dict(self) -> dict:
        return {"progress": self.progress, "base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, "progress", "was trained without a time_budget; resume it without one")
        self.base_lrs = state["base_lrs"]
        self.set_progress(state["progress"])


def list_schedulers() -> List[str]:
    """Names accepted by :func:`create_scheduler`."""
    return SCHEDULERS.names()


def create_scheduler(spec: str, optimizer, epochs: int, warmup: int = 0, mode: str = "max") -> EpochScheduler:
    """Build the scheduler named by ``spec`` (for example ``"SGDR-5-2"`` or ``"step-4-0.8"``)."""
    return EpochScheduler(optimizer, spec, epochs, warmup, mode)


def create_time_scheduler(spec: str, optimizer, warmup: float = 0.0) -> TimeScheduler:
    """The :class:`TimeScheduler` of ``spec`` ('cosine', 'linear', 'onecycle[-pct_start]' or 'constant')."""
    return TimeScheduler(optimizer, spec, warmup)
