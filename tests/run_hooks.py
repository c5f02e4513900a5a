"""Hooks that tests put into a run through a config file (``custom_hooks``), in process or under torchrun.

A config file imports them with ``config_with_hooks``: it puts this folder on ``sys.path`` first, so a subprocess
started from any folder finds them.
"""
import os
import time

import torch

from easycls import Hook

TESTS = os.path.dirname(os.path.abspath(__file__))


class NanLossOnLastRank(Hook):
    """A NaN loss on the last rank at one (epoch, batch): that rank's gradients, and so the all-reduced ones, are
    NaN, while every other rank's own loss is finite."""

    def __init__(self, epoch: int = 0, batch: int = 1):
        self.at, self.poison, self.loss_fn = (epoch, batch), False, None

    def before_run(self, runner):
        self.loss_fn, runner.stepper.loss_fn = runner.stepper.loss_fn, self.loss

    def before_train_iter(self, runner, batch_idx, batch):
        self.poison = runner.dist.rank == runner.dist.world - 1 and (runner.epoch, batch_idx) == self.at

    def loss(self, logits, target):
        loss = self.loss_fn(logits, target)
        return loss * float("nan") if self.poison else loss


class SaveReplica(Hook):
    """Each rank's weights and torch generator when training ends, as ``save_dir/replica{rank}.pth``."""

    def after_run(self, runner):
        state = {"model": runner.model.state_dict(), "eval_model": runner.eval_model.state_dict(),
                 "rng": torch.get_rng_state(), "temperature": runner.meta.temperature}
        torch.save(state, os.path.join(runner.cfg["save_dir"], f"replica{runner.dist.rank}.pth"))


class WaitForCtrlC(Hook):
    """With a ``marker`` path: after batch ``batch`` of epoch ``epoch`` (0-based) rank 0 writes the marker and
    waits until the Ctrl-C that the test then sends has arrived, so the interruption lands at a known batch.
    Without one it does nothing (the uninterrupted run of the same config)."""

    def __init__(self, marker: str = "", epoch: int = 1, batch: int = 2):
        self.marker, self.at = marker, (epoch, batch)

    def after_train_iter(self, runner, batch_idx, batch, outputs):
        if not (self.marker and runner.dist.is_main and (runner.epoch, batch_idx) == self.at):
            return
        open(self.marker, "w").close()
        deadline = time.time() + 60
        while not runner._ctrl_c.requested and time.time() < deadline:
            time.sleep(0.01)


def config_with_hooks(path, cfg: dict, hooks: str) -> str:
    """Write a config file at ``path``: ``cfg`` plus ``custom_hooks`` given as Python source, for example
    ``"[SaveReplica()]"``, built from the hooks above."""
    path.write_text(f"import sys\nsys.path.insert(0, {TESTS!r})\n"
                    f"from run_hooks import NanLossOnLastRank, SaveReplica, WaitForCtrlC  # noqa: E402,F401\n\n"
                    f"cfg = {{**{cfg!r}, 'custom_hooks': {hooks}}}\n")
    return str(path)
