"""Hooks that change what is trained or kept: freezing, EMA, the LR schedule, early stop, checkpoints,
calibration and multi-label thresholds."""
import logging
from typing import Optional

import torch

from easycls.core.distributed import all_gather_rows
from easycls.core.errors import ConfigError
from easycls.engine.hooks.base import Hook, register_hook
from easycls.engine.tracking import MONITORS, CheckpointSaver, EarlyStopper
from easycls.evaluation.multilabel import tune_thresholds

log = logging.getLogger(__name__)


def _monitor_mode(hook: str, monitor) -> str:
    """``'min'`` or ``'max'`` for a metric name; a one-line error naming the hook, the argument and the metrics."""
    if not (isinstance(monitor, str) and monitor in MONITORS):
        raise ConfigError(f"{hook} argument monitor={monitor!r} is not a monitored metric; allowed: "
                          f"{', '.join(MONITORS)}")
    return MONITORS[monitor]


# ----------------------------------------------------------------------------- built-in hooks
@register_hook
class FreezeHook(Hook):
    """freezeBeforeLinear: train only the classifier for the first ``epochs`` epochs, then every layer."""

    priority = 10

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.frozen = False

    def before_train_epoch(self, runner) -> None:
        from easycls.models.factory import set_backbone_trainable  # imports timm, which predict does without
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
        self.monitor = monitor
        self.stopper = EarlyStopper(_monitor_mode("EarlyStopHook", monitor), patience, min_delta)

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
class CalibrationHook(Hook):
    """Temperature scaling: after each validation, fits a temperature on its logits and stores it in the model's
    metadata, so ``best.pth`` carries the one fitted for its own weights; evaluate and predict apply it. Under
    torchrun every rank gathers all ranks' logits first, so the whole validation set decides, the same on all."""

    priority = 70

    def after_val_epoch(self, runner, metrics) -> None:
        logits, labels = gathered_val_outputs(runner)
        if len(labels):
            runner.meta.temperature = runner.kind.fit_temperature(logits, labels)

    def after_run(self, runner) -> None:
        log.info("calibration: temperature %.3f fitted on the last epoch's validation set (best.pth has the one of "
                 "its epoch)", runner.meta.temperature)


@register_hook
class ThresholdHook(Hook):
    """Multi-label: after each validation (and its temperature), tunes a threshold per class on the validation
    probabilities, the one maximising that class's F1, into the model's metadata, so ``best.pth`` carries the
    thresholds of its own epoch; evaluate, predict and export apply them unless ``threshold`` is a number."""

    priority = 75

    def after_val_epoch(self, runner, metrics) -> None:
        logits, labels = gathered_val_outputs(runner)  # every rank's, so every rank tunes the same thresholds
        if len(labels):
            temperature = runner.meta.temperature if runner.cfg["calibrate"] else 1.0
            probs = torch.sigmoid(logits.float() / temperature).cpu().numpy()
            runner.meta.thresholds = tune_thresholds(labels.cpu().numpy(), probs)

    def after_run(self, runner) -> None:
        log.info("thresholds per class, tuned on the last epoch's validation set (best.pth has those of its epoch): "
                 "%s", ", ".join(f"{c} {t:.2f}" for c, t in zip(runner.meta.class_names, runner.meta.thresholds)))


@register_hook
class CheckpointHook(Hook):
    """Writes ``last.pth`` every epoch (the whole training state, every hook's included) and ``best.pth`` +
    ``best.safetensors`` (the weights validation used) when ``monitor`` improves; rank 0 only."""

    priority = 80

    def __init__(self, monitor: str = "val_acc", save_best_only: bool = True, save_one_only: bool = True):
        self.monitor = monitor
        self.best_only, self.one_only = save_best_only, save_one_only
        self.saver: Optional[CheckpointSaver] = None
        self.tracker = EarlyStopper(_monitor_mode("CheckpointHook", monitor), patience=0)

    def before_run(self, runner) -> None:
        self.saver = CheckpointSaver(runner.cfg["save_dir"], self.best_only, self.one_only)

    def after_val_epoch(self, runner, metrics) -> None:
        improved = self.tracker.update(metrics[self.monitor], runner.epoch)
        state = runner.state_dict()  # on every rank: it gathers every rank's random generators
        if runner.dist.is_main:
            self.saver.save(state, runner.epoch, metrics[self.monitor], improved)
            if improved:
                log.info("epoch %d: new best %s %.4f", runner.epoch + 1, self.monitor, metrics[self.monitor])

    def state_dict(self) -> dict:
        return self.tracker.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state)


def gathered_val_outputs(runner):
    """The last validation's logits and labels from every rank, on every rank (a rank's share may be empty)."""
    if runner.val_outputs:
        logits, labels = (torch.cat(parts) for parts in zip(*runner.val_outputs))
    else:
        logits = torch.zeros(0, len(runner.meta.class_names), device=runner.device)
        shape = (0, len(runner.meta.class_names)) if runner.meta.multi_label else (0,)
        labels = torch.zeros(shape, dtype=torch.long, device=runner.device)
    return all_gather_rows(logits, runner.dist), all_gather_rows(labels, runner.dist)
