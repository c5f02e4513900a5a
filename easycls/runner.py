"""ModelRunner: sequences the training events; everything around the step itself is a hook (``hooks.py``).

``train`` calls, for every epoch and in this order: ``onTrainStep`` (one epoch, the ``*_train_iter`` events
around each batch) -> ``onValidation`` -> ``checkpoint`` (records the epoch and runs the ``after_val_epoch``
hooks: LR schedule, early-stop tracking, your hooks, logging, then the checkpoint files) -> ``earlyStop``.
The parts (model, optimizer, scheduler, loss, preprocessing, hooks) are built by ``build.py`` and handed in.
"""
import logging
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from . import files
from .checkpoints import ModelMeta, load_checkpoint, save_checkpoint
from .config import MONITORS, plain
from .data import FailureLog, Preprocessor
from .device import autocast, resolve_amp
from .distributed import DistInfo, all_reduce_sum
from .errors import CheckpointError, TrainingError
from .hooks import Hook, sort_hooks
from .inference import InferenceModel

log = logging.getLogger(__name__)
MAX_BAD_STEPS = 3
RESUME_MUST_MATCH = ("model_name", "class_names", "img_size", "channels")
EVENTS = ("before_run", "before_train_epoch", "before_train_iter", "after_train_iter", "after_train_epoch",
          "before_val_epoch", "after_val_epoch", "after_run")


class TrainingInterrupted(Exception):
    """Ctrl-C during training; ``path`` is the checkpoint that was saved so the run can resume."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


class ModelRunner:
    """Trains, validates, evaluates and predicts with one model.

    Hooks read ``runner.cfg`` (the merged config), ``runner.epoch`` (0-based), ``runner.model`` (the network being
    trained), ``runner.eval_model`` (what validation and ``best.pth`` use: ``model`` unless EMA is on),
    ``runner.optimizer``, ``runner.scheduler``, ``runner.history`` (one metrics dict per epoch) and
    ``runner.optimizer_steps``; a hook stops training by setting ``runner.stop_training = True``.
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, cfg: dict, device: torch.device, *,
                 optimizer: torch.optim.Optimizer, scheduler, loss_fn: nn.Module, preprocess: Preprocessor,
                 hooks: Sequence[Hook] = (), dist: Optional[DistInfo] = None):
        self.model = self.eval_model = model
        self.meta, self.cfg, self.device = meta, cfg, device
        self.optimizer, self.scheduler, self.loss_fn, self.preprocess = optimizer, scheduler, loss_fn, preprocess
        self.hooks = sort_hooks(hooks)
        self.dist = dist or DistInfo()
        self.amp_dtype = resolve_amp(cfg["amp"], device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.monitor, self.max_epochs, self.accumulate = cfg["monitor"], cfg["epochs"], cfg["accumulate_steps"]
        self.epoch = self.start_epoch = self.optimizer_steps = self.train_batches = 0
        self.history: List[dict] = []
        self.stop_training, self.progress = False, True
        self._sums, self._count, self._bad_steps, self._group_finite = None, 0, 0, True
        self._resumed: Optional[dict] = None
        self._failure_log: Optional[FailureLog] = None
        self._interrupted = False
        self.wrap()
        self._bind_hooks()

    # ----------------------------------------------------------------- set-up and events
    def wrap(self) -> None:
        """(Re)build what the training step calls: compiled when asked, inside DDP under torchrun."""
        net = torch.compile(self.model) if self.cfg["compile"] else self.model
        if self.dist.enabled:
            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._net = net

    def call_hook(self, event: str, *args) -> None:
        """Call ``event`` on every hook that overrides it, in priority order."""
        for method in self._bound[event]:
            method(self, *args)

    def _bind_hooks(self) -> None:
        # Only overridden methods are kept, so a no-op event costs nothing per iteration.
        self._bound = {event: [getattr(h, event) for h in self.hooks if getattr(type(h), event) is not
                               getattr(Hook, event)] for event in EVENTS}

    def hook_names(self) -> List[str]:
        """A unique name per hook (its class name, with ``.1``, ``.2`` ... for repeats): the keys of its state."""
        names = []
        for hook in self.hooks:
            base = type(hook).__name__
            names.append(base if base not in names else f"{base}.{sum(n.split('.')[0] == base for n in names)}")
        return names

    # ----------------------------------------------------------------- training
    def train(self, train_loader, val_loader) -> dict:
        """Train for the configured epochs (from ``start_epoch`` after a resume); return :meth:`summary`."""
        if self.finished:  # a resumed run that had already stopped
            return self.summary()
        self.train_batches = len(train_loader)
        self._bind_hooks()
        self.call_hook("before_run")
        self._restore_hooks()
        try:
            with self._ctrl_c_between_batches():
                for epoch in range(self.start_epoch, self.max_epochs):
                    self._train_epoch(epoch, train_loader, val_loader)
                    if self.earlyStop(epoch, self.history[-1]):
                        break
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._save_interrupted()) from None
        self.call_hook("after_run")
        return self.summary()

    def _train_epoch(self, epoch: int, train_loader, val_loader) -> None:
        self.epoch, started = epoch, time.time()
        train_loader.set_epoch(epoch)
        self.call_hook("before_train_epoch")
        metrics = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                   **self.onTrainStep(train_loader, epoch)}
        self.call_hook("after_train_epoch")
        self.call_hook("before_val_epoch")
        metrics.update(self.onValidation(val_loader))
        metrics["seconds"] = round(time.time() - started, 3)
        self.checkpoint(epoch, metrics)

    @contextmanager
    def _ctrl_c_between_batches(self):
        """The first Ctrl-C stops training after the current batch, the second at once.

        A KeyboardInterrupt raised wherever the signal lands can be lost (in a finalizer that runs during garbage
        collection, or a C extension's import); a flag checked between batches cannot.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _check_interrupt(self) -> None:
        if self._interrupted:
            raise KeyboardInterrupt

    def onTrainStep(self, loader, epoch: int) -> dict:
        """Train one epoch; return ``train_loss`` and ``train_acc`` averaged over every rank's images."""
        self._net.train()
        self._sums = torch.zeros(2, device=self.device)  # loss sum, correct: kept on the device, no sync per step
        self._count, batches = 0, len(loader)
        if self._failure_log is None or self._failure_log.loader is not loader:
            self._failure_log = FailureLog(loader)  # one per loader: a streamed file fails again every epoch
        for step, batch in enumerate(loader):
            self._failure_log(batch.failures)
            if batch.labels.numel() == 0:
                continue
            self.call_hook("before_train_iter", step, batch)
            x = self.preprocess(batch.images, train=True)
            y = batch.labels.to(self.device, non_blocking=True)
            outputs = self._train_batch(x, y, step, batches)
            self._sums += torch.stack([outputs["loss"].float() * len(y), (outputs["logits"].argmax(1) == y).sum()])
            self._count += len(y)
            self.call_hook("after_train_iter", step, batch, outputs)
            self._check_interrupt()
        totals = torch.cat([self._sums, torch.tensor([float(self._count)], device=self.device)])
        loss_sum, correct, count = all_reduce_sum(totals, self.dist).tolist()
        return {"train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}

    def running_metrics(self) -> Tuple[float, float]:
        """This rank's mean loss and accuracy so far in the current epoch (synchronises the device)."""
        loss, acc = (self._sums / max(self._count, 1)).tolist()
        return loss, acc

    def _train_batch(self, x: torch.Tensor, y: torch.Tensor, step: int = 0, batches: int = 1) -> dict:
        """Forward and backward of one batch; the optimizer steps on the last batch of each group of
        ``accumulate_steps`` batches (and on the epoch's last batch), with the loss divided by the group size."""
        start = step - step % self.accumulate
        group = min(self.accumulate, batches - start)
        boundary = step + 1 >= start + group
        # Under DDP gradients are all-reduced only on the stepping batch; the others accumulate locally.
        with nullcontext() if boundary or not self.dist.enabled else self._net.no_sync():
            with autocast(self.device, self.amp_dtype):
                logits = self._net(x)
                loss = self.loss_fn(logits, y)
            self.scaler.scale(loss / group).backward()  # always backward, so DDP ranks stay in step
        if self.amp_dtype is None and not torch.isfinite(loss):
            self._group_finite = False
        stepped = boundary and self._optimizer_step(step)
        return {"loss": loss.detach(), "logits": logits.detach(), "labels": y, "stepped": stepped}

    def _optimizer_step(self, step: int) -> bool:
        """Unscale, clip, step, update, zero_grad; skips a group whose float32 loss was not finite."""
        if not self._group_finite:
            self.optimizer.zero_grad(set_to_none=True)
            self._group_finite, self._bad_steps = True, self._bad_steps + 1
            if self._bad_steps >= MAX_BAD_STEPS:
                raise TrainingError(f"loss is not finite (NaN or inf) at epoch {self.epoch + 1}, step {step + 1}, "
                                    f"{MAX_BAD_STEPS} steps in a row; lower learning_rate or set clip_gradient")
            return False
        self._bad_steps = 0
        if self.cfg["clip_gradient"]:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["clip_gradient"])
        self.scaler.step(self.optimizer)  # skipped by the scaler when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1
        return True

    def onValidation(self, loader) -> dict:
        """Loss, accuracy (and macro F1 when ``metrics`` has 'F1') of ``eval_model`` over every rank's share."""
        n = len(self.meta.class_names)
        confusion = torch.zeros(n * n, device=self.device)
        loss_sum = torch.zeros(1, device=self.device)
        model = self.inference(tta=False)
        for batch in loader:
            if batch.labels.numel() == 0:
                continue
            logits = model.logits(batch.images)
            y = batch.labels.to(self.device)
            loss_sum += self.loss_fn(logits, y).float() * len(y)
            confusion += torch.bincount(y * n + logits.argmax(1), minlength=n * n)
        all_reduce_sum(confusion, self.dist)
        all_reduce_sum(loss_sum, self.dist)
        cm = confusion.reshape(n, n).double()
        out = {"val_loss": loss_sum.item() / max(cm.sum().item(), 1),
               "val_acc": (cm.diag().sum() / cm.sum().clamp(min=1)).item()}
        if "F1" in self.cfg["metrics"] or self.monitor == "val_f1":
            out["val_f1"] = (2 * cm.diag() / (cm.sum(0) + cm.sum(1)).clamp(min=1)).mean().item()
        return out

    def checkpoint(self, epoch: int, metrics: dict) -> None:
        """Record the epoch and run the ``after_val_epoch`` hooks; the built-ins step the LR, track early
        stopping, log the epoch, write ``results.csv`` and the curves, and save ``last.pth`` / ``best.pth``."""
        self.history.append(metrics)
        self.call_hook("after_val_epoch", metrics)
        self._check_interrupt()

    def earlyStop(self, epoch: int, metrics: dict) -> bool:
        """True when a hook asked to stop: the early-stop hook does after ``early_stop_patient`` epochs in which
        the monitored metric did not improve."""
        return self.stop_training

    @property
    def finished(self) -> bool:
        return self.stop_training or self.start_epoch >= self.max_epochs

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything an exact resume needs: weights, optimizer, scheduler, scaler, history, hooks, RNG."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {"model": self.model.state_dict(), "meta": self.meta.to_dict(), "config": plain(self.cfg),
                 "epoch": self.epoch, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "history": list(self.history), "optimizer_steps": self.optimizer_steps,
                 "stopped": self.stop_training, "rng": rng,
                 "hooks": {name: hook.state_dict() for name, hook in zip(self.hook_names(), self.hooks)}}
        if self.eval_model is not self.model:
            state["eval_model"] = self.eval_model.state_dict()
        return state

    def _save_interrupted(self) -> str:
        path = files.out(self.cfg, files.INTERRUPTED)
        if self.dist.is_main:
            state = {**self.state_dict(), "epoch": len(self.history) - 1, "interrupted": True}  # last whole epoch
            save_checkpoint(state, path)
            log.info("interrupted during epoch %d; saved %s (resume=True continues from it)", self.epoch + 1, path)
        return path

    def resume(self, path: str) -> None:
        """Restore weights, optimizer, scheduler, scaler, history and RNG from ``path``; hook states (and the
        EMA weights) follow in :meth:`train`, once ``before_run`` has built what they restore into."""
        state = load_checkpoint(path)
        if "optimizer" not in state:
            raise CheckpointError(f"{path} holds weights only (no optimizer state); resume from last.pth")
        saved, now = ModelMeta.from_dict(state["meta"], path).to_dict(), self.meta.to_dict()
        changed = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in RESUME_MUST_MATCH if saved[k] != now[k]]
        if changed:
            raise CheckpointError(f"cannot resume from {path}: " + "; ".join(changed))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.start_epoch = list(state["history"]), state["epoch"] + 1
        self.optimizer_steps, self.stop_training = state["optimizer_steps"], state["stopped"]
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self._resumed = state
        log.info("resumed from %s at epoch %d", path, self.start_epoch + 1)

    def _restore_hooks(self) -> None:
        if self._resumed is None:
            return
        saved = self._resumed["hooks"]
        for name, hook in zip(self.hook_names(), self.hooks):
            if name in saved:
                hook.load_state_dict(saved[name])
        if "eval_model" in self._resumed and self.eval_model is not self.model:
            self.eval_model.load_state_dict(self._resumed["eval_model"])
        self._resumed = None

    def summary(self) -> dict:
        """The best epoch, its metric and where the outputs are."""
        pick = max if MONITORS[self.monitor] == "max" else min
        best = pick(self.history, key=lambda row: row[self.monitor]) if self.history else {}
        return {"best_epoch": best.get("epoch", 0), "monitor": self.monitor, "best": best.get(self.monitor),
                "epochs_run": len(self.history),
                "files": {name: files.out(self.cfg, name) for name in files.TRAIN_OUTPUTS}}

    # ----------------------------------------------------------------- inference
    def inference(self, tta: Optional[bool] = None) -> InferenceModel:
        """``eval_model`` with this run's preprocessing and autocast, for evaluation and prediction."""
        return InferenceModel(self.eval_model, self.meta, self.preprocess, self.amp_dtype,
                              self.cfg["TTA"] if tta is None else tta)

    def predict(self, loader) -> Iterator[Tuple[np.ndarray, np.ndarray, list]]:
        """Yield ``(indices, probabilities, failures)`` batch by batch (TTA when the config asks for it)."""
        return self.inference().predict(loader)

    def evaluate(self, loader) -> dict:
        """Metrics (scikit-learn) on a labelled loader, plus the per-image labels and probabilities."""
        return self.inference().evaluate(loader)
