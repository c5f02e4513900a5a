"""Hooks that record a run for people: the console log, TensorBoard, the data preview and report.html."""
import logging
import math
import time
from typing import Callable, Optional

import pandas as pd
import torch
from tqdm import tqdm

from easycls.core import files
from easycls.core.checkpoints import atomic_write
from easycls.core.errors import ConfigError
from easycls.engine.hooks.base import Hook, register_hook
from easycls.evaluation.plots import plot_curves

log = logging.getLogger(__name__)



@register_hook
class LoggerHook(Hook):
    """A progress bar per epoch with the running loss and accuracy (and what ``status()`` returns, such as a time
    budget's time left), refreshed every batch when an epoch has at most ``every_batch_up_to`` batches, else every
    ``seconds`` (reading them waits for the device, which per batch would slow a fast GPU); after each epoch one log
    line, ``results.csv`` and the ``loss.png`` / ``acc.png`` curves (rank 0)."""

    priority = 60

    def __init__(self, seconds: float = 1.0, every_batch_up_to: int = 50,
                 status: Optional[Callable[[], dict]] = None):
        self.seconds, self.every_batch_up_to, self.status = seconds, every_batch_up_to, status
        self.bar, self.shown = None, float("-inf")

    def before_train_epoch(self, runner) -> None:
        self.bar = tqdm(total=runner.train_batches, desc=f"epoch {runner.epoch + 1}/{runner.max_epochs}",
                        leave=False, dynamic_ncols=True, disable=not (runner.progress and runner.dist.is_main))
        self.shown = float("-inf")  # the first batch shows its figures

    def after_train_iter(self, runner, batch_idx, batch, outputs) -> None:
        if self.bar is None:  # onTrainStep called on its own, outside train()
            return
        self.bar.update()
        now = time.monotonic()
        due = runner.train_batches <= self.every_batch_up_to or now - self.shown >= self.seconds \
            or batch_idx == runner.train_batches - 1
        if due and not self.bar.disable:
            loss, acc = runner.running_metrics()
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", **(self.status() if self.status else {}))
            self.shown = now

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
        acc_keys = ["train_acc", "val_acc"] + [k for k in ("val_f1", "val_mAP") if k in frame]
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
class DataPreviewHook(Hook):
    """show_data: ``save_dir/data_preview.png``, the run's first training batch as the network saw it (after
    augmentation and mixing), each image titled with its class, or its two classes and their shares when mixed."""

    priority = 55

    def __init__(self, count: int = 32):
        self.count, self.done = count, False

    def after_train_iter(self, runner, batch_idx, batch, outputs) -> None:
        if self.done or not runner.dist.is_main:
            return
        from easycls.evaluation.plots import plot_preview
        meta = runner.meta
        mean = torch.tensor(meta.mean).reshape(1, -1, 1, 1)
        std = torch.tensor(meta.std).reshape(1, -1, 1, 1)
        x = outputs["inputs"][: self.count].detach().float().cpu() * std + mean
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        path = files.out(runner.cfg, files.DATA_PREVIEW)
        titles = [runner.kind.describe(t, meta.class_names) for t in outputs["targets"][: self.count].cpu()]
        plot_preview(images, titles, path)
        log.info("wrote %s", path)
        self.done = True

    def state_dict(self) -> dict:
        return {"done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.done = state["done"]


@register_hook
class ReportHook(Hook):
    """Writes ``save_dir/report.html`` when training ends (rank 0); evaluate updates it."""

    priority = 90

    def after_run(self, runner) -> None:
        if runner.dist.is_main:
            from easycls.evaluation.report import write_report
            log.info("wrote %s", write_report(runner.cfg["save_dir"]))
