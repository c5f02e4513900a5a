"""Early stopping and checkpoint bookkeeping, each following one monitored metric."""
import glob
import logging
import os
import shutil
from typing import Optional

import torch

from easycls.core import files
from easycls.core.checkpoints import save_checkpoint, save_safetensors
from easycls.core.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)
_BETTER = {"min": lambda new, best, delta: new < best - delta, "max": lambda new, best, delta: new > best + delta}


class EarlyStopper:
    """Stop when the monitored value has not improved by ``min_delta`` for ``patience`` epochs (0: never stop)."""

    def __init__(self, mode: str, patience: int, min_delta: float = 0.0):
        if mode not in _BETTER:
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode, self.patience, self.min_delta = mode, patience, min_delta
        self.best: Optional[float] = None
        self.best_epoch = -1
        self.wait = 0
        self.should_stop = False

    def state_dict(self) -> dict:
        """What changes while training (not the settings, which come from the config on resume)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "should_stop": self.should_stop}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait, self.should_stop = (state[k] for k in self.state_dict())

    def update(self, value: float, epoch: int) -> bool:
        """Record one epoch's value; return True when it is a new best."""
        if self.best is None or _BETTER[self.mode](value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        self.should_stop = self.patience > 0 and self.wait >= self.patience
        return False


def all_finite(state_dict: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


class CheckpointSaver:
    """Writes ``last.pth`` every epoch and ``best.pth`` (+ ``best.safetensors``) when told it improved.

    ``save_best_only=False`` also keeps ``epoch_NNN.pth`` for every epoch; ``save_one_only=False`` also keeps
    ``best_eNNN_<metric>.pth`` for every improvement instead of only the latest best. ``best.pth`` holds the
    weights validation used (``eval_model`` when present, such as the EMA average), not the optimizer.
    """

    def __init__(self, save_dir: str, save_best_only: bool = True, save_one_only: bool = True):
        self.save_dir = save_dir
        self.save_best_only, self.save_one_only = save_best_only, save_one_only

    def path(self, name: str) -> str:
        return os.path.join(self.save_dir, name)

    def save(self, state: dict, epoch: int, value: float, improved: bool) -> None:
        """Save this epoch's training ``state``; also as the best when ``improved``."""
        if not all(all_finite(state[k]) for k in ("model", "eval_model") if k in state):
            raise TrainingError(f"epoch {epoch + 1}: the weights are not finite (NaN or inf); not saving them. "
                                f"Lower learning_rate or set clip_gradient.")
        save_checkpoint(state, self.path(files.LAST))
        if os.path.exists(self.path(files.INTERRUPTED)):
            os.remove(self.path(files.INTERRUPTED))  # superseded by the newer last.pth
        if not self.save_best_only:
            save_checkpoint(state, self.path(files.epoch_snapshot(epoch)))
        if improved:
            self._save_best(state, epoch, value)

    def _save_best(self, state: dict, epoch: int, value: float) -> None:
        best = {"model": state.get("eval_model", state["model"]),
                **{k: state[k] for k in ("meta", "config", "epoch", "history")}}
        save_checkpoint(best, self.path(files.BEST))
        save_safetensors(best["model"], {**state["meta"], "epoch": epoch + 1, "metric": value},
                         self.path(files.BEST_SAFETENSORS))
        if not self.save_one_only:
            save_checkpoint(best, self.path(files.best_snapshot(epoch, value)))

    def remove_stale(self) -> None:
        """Delete what a previous run left in ``save_dir`` that would pass for this run's: epoch and best snapshots,
        and the evaluation and heatmaps of the old model, which ``report.html`` would show as the new one's."""
        for pattern in ("epoch_*.pth", "best_e*.pth", files.INTERRUPTED, files.LR_PLOT):
            for path in glob.glob(self.path(pattern)):
                os.remove(path)
        for name in (files.EVAL_DIR, files.HEATMAPS_DIR):
            shutil.rmtree(self.path(name), ignore_errors=True)


MONITORS = {"val_acc": "max", "val_f1": "max", "val_loss": "min", "val_mAP": "max"}


def resolve_monitor(cfg: dict, multi_label: bool) -> dict:
    """``cfg`` with ``monitor='auto'`` made concrete: val_mAP for a multi-label model, else val_acc. val_mAP is
    only measured for multi-label models."""
    monitor = cfg["monitor"]
    if monitor == "auto":
        monitor = "val_mAP" if multi_label else "val_acc"
    elif monitor == "val_mAP" and not multi_label:
        raise ConfigError("monitor='val_mAP' scores multi-label models; this data has one label per image: use "
                          "val_acc, val_f1 or val_loss")
    cfg["monitor"] = monitor  # in place: the run's own config, so config.json records the metric used
    return cfg
