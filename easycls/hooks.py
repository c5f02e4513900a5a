"""Hooks: everything around the training step, called by :class:`~easycls.runner.ModelRunner` at fixed events.

A run calls, in this order::

    before_run
    per epoch:  before_train_epoch
                per batch: before_train_iter, (the step), after_train_iter
                after_train_epoch, before_val_epoch, (validation), after_val_epoch(metrics)
    after_run

Hooks run in ascending ``priority`` (lower first); equal priorities keep the order given. A hook with state
returns it from ``state_dict`` and gets it back through ``load_state_dict`` when a run resumes from ``last.pth``.
Users add hooks with the config key ``custom_hooks``: a registered name, ``dict(type="Name", **kwargs)`` or a
:class:`Hook` instance (a class defined in ``config.py`` itself works).
"""
import logging
import math
from typing import Dict, List, Optional, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from . import files
from .calibration import fit_temperature
from .checkpoints import atomic_write
from .config import MONITORS
from .errors import ConfigError
from .plots import plot_curves
from .tracking import CheckpointSaver, EarlyStopper

log = logging.getLogger(__name__)
HOOKS: Dict[str, type] = {}
EVENTS = ("before_run", "before_train_epoch", "before_train_iter", "after_train_iter", "after_train_epoch",
          "before_val_epoch", "after_val_epoch", "after_run")


class Hook:
    """Base class: every event is a no-op; override the ones you need. ``runner`` is the :class:`ModelRunner`."""

    priority = 50

    def before_run(self, runner) -> None:
        """Once, before the first epoch (after a resume, before the first remaining epoch)."""

    def before_train_epoch(self, runner) -> None:
        """At the start of each epoch; ``runner.epoch`` is its 0-based number."""

    def before_train_iter(self, runner, batch_idx: int, batch) -> None:
        """Before each training batch (a :class:`~easycls.data.Batch` of uint8 images)."""

    def after_train_iter(self, runner, batch_idx: int, batch, outputs: dict) -> None:
        """After each training batch; ``outputs`` has ``loss``, ``logits``, ``labels`` and ``stepped``."""

    def after_train_epoch(self, runner) -> None:
        """After the last training batch of the epoch."""

    def before_val_epoch(self, runner) -> None:
        """Before validation."""

    def after_val_epoch(self, runner, metrics: dict) -> None:
        """After validation; ``metrics`` is the epoch's row of ``results.csv``."""

    def after_run(self, runner) -> None:
        """Once, when training ends (the last epoch, or an early stop)."""

    def state_dict(self) -> dict:
        """What must survive a resume; saved in ``last.pth``."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


def register_hook(cls: type) -> type:
    """Class decorator: make a :class:`Hook` subclass usable by name in ``custom_hooks``."""
    if not (isinstance(cls, type) and issubclass(cls, Hook)):
        raise TypeError(f"register_hook takes a Hook subclass, got {cls!r}")
    HOOKS[cls.__name__] = cls
    return cls


def list_hooks() -> List[str]:
    """The names that ``custom_hooks`` accepts."""
    return sorted(HOOKS)


def _unknown_hook(name) -> ConfigError:
    return ConfigError(f"unknown hook {name!r} in custom_hooks; registered hooks: {', '.join(list_hooks())} "
                       f"(or give a Hook instance)")


def check_custom_hooks(items) -> None:
    """Raise a one-line :class:`ConfigError` for an item of ``custom_hooks`` that cannot become a hook."""
    for item in items:
        name = item.get("type") if isinstance(item, dict) else item
        if isinstance(item, Hook):
            continue
        if not isinstance(name, str):
            raise ConfigError(f"custom_hooks item {item!r} is not a hook name, a dict(type=...) or a Hook instance")
        if name not in HOOKS:
            raise _unknown_hook(name)


def build_hook(item) -> Hook:
    """A :class:`Hook` from a registered name, ``dict(type=name, **kwargs)`` or a Hook instance."""
    if isinstance(item, Hook):
        return item
    check_custom_hooks([item])
    if isinstance(item, str):
        return HOOKS[item]()
    kwargs = {k: v for k, v in item.items() if k != "type"}
    try:
        return HOOKS[item["type"]](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"custom_hooks item {item!r}: {exc}") from None


class HookList:
    """Hooks by ascending priority (``sorted`` is stable: equal priorities keep their order), called by event.

    Only the events a hook overrides are called, so the no-op ones cost nothing per iteration.
    """

    def __init__(self, hooks: Sequence[Hook] = ()):
        self.hooks = sorted(hooks, key=lambda hook: hook.priority)
        self._bound = {event: [getattr(h, event) for h in self.hooks
                               if getattr(type(h), event) is not getattr(Hook, event)] for event in EVENTS}

    def __iter__(self):
        return iter(self.hooks)

    def call(self, event: str, runner, *args) -> None:
        for method in self._bound[event]:
            method(runner, *args)

    def names(self) -> List[str]:
        """A unique name per hook (its class name, with ``.1``, ``.2`` ... for repeats): the keys of its state."""
        names = []
        for hook in self.hooks:
            base = type(hook).__name__
            names.append(base if base not in names else f"{base}.{sum(n.split('.')[0] == base for n in names)}")
        return names

    def state_dict(self) -> dict:
        return {name: hook.state_dict() for name, hook in zip(self.names(), self.hooks)}

    def load_state_dict(self, saved: dict) -> None:
        """Hand each hook its saved state; a hook the saved run did not have keeps its fresh state."""
        for name, hook in zip(self.names(), self.hooks):
            if name in saved:
                hook.load_state_dict(saved[name])


# ----------------------------------------------------------------------------- built-in hooks
@register_hook
class FreezeHook(Hook):
    """freezeBeforeLinear: train only the classifier for the first ``epochs`` epochs, then every layer."""

    priority = 10

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.frozen = False

    def before_train_epoch(self, runner) -> None:
        from .models import set_backbone_trainable  # imports timm, which predict does without
        frozen = runner.epoch < self.epochs
        if frozen != self.frozen:
            set_backbone_trainable(runner.model, not frozen)
            self.frozen = frozen
            runner.wrap()  # DDP must see the new set of trainable parameters
            log.info("epoch %d: %s", runner.epoch + 1, "training the classifier only" if frozen else
                     "training all layers")


@register_hook
class EMAHook(Hook):
    """An exponential moving average of the weights (timm's ModelEmaV3, with warm-up) that validation,
    ``best.pth``, evaluate and predict use instead of the raw weights."""

    priority = 20

    def __init__(self, decay: float = 0.9998, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.ema = None

    def before_run(self, runner) -> None:
        from timm.utils import ModelEmaV3
        self.ema = ModelEmaV3(runner.model, decay=self.decay, use_warmup=self.warmup)
        runner.eval_model = self.ema.module  # the runner saves it as eval_model and restores it on resume

    def after_train_iter(self, runner, batch_idx, batch, outputs) -> None:
        if outputs["stepped"]:
            self.ema.update(runner.model, step=runner.optimizer_steps)


@register_hook
class ParamSchedulerHook(Hook):
    """Steps the learning-rate scheduler once per epoch, on the monitored metric (ReduceLROnPlateau uses it)."""

    priority = 30

    def after_val_epoch(self, runner, metrics) -> None:
        runner.scheduler.step(metrics[runner.monitor])


@register_hook
class EarlyStopHook(Hook):
    """Stops training when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs (0: never)."""

    priority = 40

    def __init__(self, monitor: str = "val_acc", patience: int = 7, min_delta: float = 0.0):
        if monitor not in MONITORS:
            raise ConfigError(f"EarlyStopHook monitor {monitor!r}; allowed: {', '.join(MONITORS)}")
        self.monitor = monitor
        self.stopper = EarlyStopper(MONITORS[monitor], patience, min_delta)

    def after_val_epoch(self, runner, metrics) -> None:
        self.stopper.update(metrics[self.monitor], runner.epoch)
        if self.stopper.should_stop:
            runner.stop_training = True
            log.info("early stop after epoch %d: %s did not improve for %d epochs; best epoch %d (%.4f)",
                     runner.epoch + 1, self.monitor, self.stopper.patience, self.stopper.best_epoch + 1,
                     self.stopper.best)

    def state_dict(self) -> dict:
        return self.stopper.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stopper.load_state_dict(state)


@register_hook
class LoggerHook(Hook):
    """A progress bar per epoch (running loss and accuracy every ``interval`` batches); after each epoch one log
    line, ``results.csv`` and the ``loss.png`` / ``acc.png`` curves (rank 0)."""

    priority = 60

    def __init__(self, interval: int = 20):
        self.interval = interval
        self.bar = None

    def before_train_epoch(self, runner) -> None:
        self.bar = tqdm(total=runner.train_batches, desc=f"epoch {runner.epoch + 1}/{runner.max_epochs}",
                        leave=False, dynamic_ncols=True, disable=not (runner.progress and runner.dist.is_main))

    def after_train_iter(self, runner, batch_idx, batch, outputs) -> None:
        if self.bar is None:  # onTrainStep called on its own, outside train()
            return
        self.bar.update()
        if batch_idx % self.interval == 0 and not self.bar.disable:
            loss, acc = runner.running_metrics()
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}")

    def after_train_epoch(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def after_val_epoch(self, runner, metrics) -> None:
        if not runner.dist.is_main:
            return
        log.info("epoch %d/%d  %s", runner.epoch + 1, runner.max_epochs,
                 "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch"))
        frame = pd.DataFrame(runner.history)
        atomic_write(files.out(runner.cfg, files.RESULTS), lambda tmp: frame.to_csv(tmp, index=False))
        plot_curves(runner.history, files.out(runner.cfg, files.LOSS_PLOT), ["train_loss", "val_loss"], "loss")
        acc_keys = ["train_acc", "val_acc"] + (["val_f1"] if "val_f1" in frame else [])
        plot_curves(runner.history, files.out(runner.cfg, files.ACC_PLOT), acc_keys, "accuracy")


@register_hook
class TensorBoardHook(Hook):
    """Every epoch's metrics and learning rate as TensorBoard scalars under ``save_dir/tensorboard`` (rank 0).

    Needs the ``tensorboard`` extra: ``pip install -e ".[tensorboard]"``.
    """

    priority = 65

    def __init__(self, log_dir: Optional[str] = None):
        require_tensorboard()
        self.log_dir = log_dir
        self.writer = None

    def before_run(self, runner) -> None:
        if runner.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(self.log_dir or files.out(runner.cfg, files.TENSORBOARD_DIR))

    def after_val_epoch(self, runner, metrics) -> None:
        if self.writer is not None:
            for key, value in metrics.items():
                if key != "epoch" and math.isfinite(value):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, metrics["epoch"])
            self.writer.flush()

    def after_run(self, runner) -> None:
        if self.writer is not None:
            self.writer.close()


def require_tensorboard() -> None:
    """A one-line error naming the extra when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError('tensorboard=True needs the tensorboard package: pip install -e ".[tensorboard]"') \
            from None


@register_hook
class CalibrationHook(Hook):
    """Temperature scaling: after each validation, fits a temperature on its logits and stores it in the model's
    metadata, so ``best.pth`` carries the one fitted for its own weights; evaluate and predict apply it."""

    priority = 70

    def after_val_epoch(self, runner, metrics) -> None:
        if runner.val_outputs:
            logits, labels = (torch.cat(parts) for parts in zip(*runner.val_outputs))
            runner.meta.temperature = fit_temperature(logits, labels)

    def after_run(self, runner) -> None:
        log.info("calibration: temperature %.3f fitted on the last epoch's validation set (best.pth has the one of "
                 "its epoch)", runner.meta.temperature)


@register_hook
class CheckpointHook(Hook):
    """Writes ``last.pth`` every epoch (the whole training state, every hook's included) and ``best.pth`` +
    ``best.safetensors`` (the weights validation used) when ``monitor`` improves; rank 0 only."""

    priority = 80

    def __init__(self, monitor: str = "val_acc", save_best_only: bool = True, save_one_only: bool = True):
        self.monitor = monitor
        self.best_only, self.one_only = save_best_only, save_one_only
        self.saver: Optional[CheckpointSaver] = None
        self.tracker = EarlyStopper(MONITORS[monitor], patience=0)

    def before_run(self, runner) -> None:
        self.saver = CheckpointSaver(runner.cfg["save_dir"], self.best_only, self.one_only)

    def after_val_epoch(self, runner, metrics) -> None:
        improved = self.tracker.update(metrics[self.monitor], runner.epoch)
        if runner.dist.is_main:
            self.saver.save(runner.state_dict(), runner.epoch, metrics[self.monitor], improved)
            if improved:
                log.info("epoch %d: new best %s %.4f", runner.epoch + 1, self.monitor, metrics[self.monitor])

    def state_dict(self) -> dict:
        return self.tracker.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state)


@register_hook
class DataPreviewHook(Hook):
    """show_data: ``save_dir/data_preview.png``, the run's first training batch as the network saw it (after
    augmentation and mixing), each image titled with its class, or its two classes and their shares when mixed."""

    priority = 55

    def __init__(self, count: int = 32):
        self.count, self.done = count, False

    def after_train_iter(self, runner, batch_idx, batch, outputs) -> None:
        if self.done or not runner.dist.is_main:
            return
        from .plots import plot_preview
        meta = runner.meta
        mean = torch.tensor(meta.mean).reshape(1, -1, 1, 1)
        std = torch.tensor(meta.std).reshape(1, -1, 1, 1)
        x = outputs["inputs"][: self.count].detach().float().cpu() * std + mean
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        path = files.out(runner.cfg, files.DATA_PREVIEW)
        plot_preview(images, [_title(t, meta.class_names) for t in outputs["targets"][: self.count].cpu()], path)
        log.info("wrote %s", path)
        self.done = True

    def state_dict(self) -> dict:
        return {"done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.done = state["done"]


def _title(target: torch.Tensor, classes: List[str]) -> str:
    """A class name, or the two largest shares of a soft (mixed) target."""
    if not target.is_floating_point():
        return classes[int(target)]
    share, index = target.topk(2)
    if share[1] < 0.05:  # smoothing only: one class
        return classes[int(index[0])]
    return "\n".join(f"{classes[int(i)]} {float(p):.2f}" for p, i in zip(share, index))


@register_hook
class ReportHook(Hook):
    """Writes ``save_dir/report.html`` when training ends (rank 0); evaluate updates it."""

    priority = 90

    def after_run(self, runner) -> None:
        if runner.dist.is_main:
            from .report import write_report
            log.info("wrote %s", write_report(runner.cfg["save_dir"]))
