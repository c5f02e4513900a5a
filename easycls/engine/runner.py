"""ModelRunner: sequences the training events; all but the step itself is a hook (``hooks.py``). Per epoch:
``onTrainStep`` -> ``onValidation`` -> ``checkpoint`` (runs the ``after_val_epoch`` hooks) -> ``earlyStop``.
The parts (model, optimizer, scheduler, loss, preprocessing, hooks) are built by ``build.py`` and handed in.
"""
import logging
import random
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from easycls.core import files
from easycls.core.checkpoints import ModelMeta, load_checkpoint, save_checkpoint
from easycls.core.device import resolve_amp
from easycls.core.distributed import DistInfo, all_reduce_sum
from easycls.core.errors import CheckpointError
from easycls.core.files import plain
from easycls.core.interrupts import CtrlC, TrainingInterrupted
from easycls.data.loaders import Preprocessor
from easycls.data.scan import FailureLog
from easycls.engine.hooks.base import Hook, HookList
from easycls.engine.step import GradientStep
from easycls.engine.tracking import MONITORS
from easycls.evaluation.predictor import InferenceModel, applied_thresholds
from easycls.evaluation.targets import SingleLabel

log = logging.getLogger(__name__)
RESUME_MUST_MATCH = ("model_name", "class_names", "img_size", "channels", "multi_label")


class ModelRunner:
    """Trains, validates, evaluates and predicts with one model.

    Hooks read ``runner.cfg`` (the merged config), ``runner.epoch`` (0-based), ``runner.model`` (the network being
    trained), ``runner.eval_model`` (what validation and ``best.pth`` use: ``model`` unless EMA is on),
    ``runner.optimizer``, ``runner.scheduler``, ``runner.history`` (one metrics dict per epoch) and
    ``runner.optimizer_steps``; a hook stops training by setting ``runner.stop_training = True``. The arithmetic
    of a batch (AMP, accumulation, clipping) is ``runner.stepper``, a :class:`~easycls.step.GradientStep`; what
    the outputs mean (training hits, validation metrics, calibration) is ``runner.kind``, a target kind of
    :mod:`easycls.evaluation.targets` (single-label unless the builder hands in another).
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, cfg: dict, device: torch.device, *,
                 optimizer: torch.optim.Optimizer, scheduler, loss_fn: nn.Module, preprocess: Preprocessor,
                 hooks: Sequence[Hook] = (), dist: Optional[DistInfo] = None, mix=None, distiller=None, kind=None):
        self.model = self.eval_model = model
        self.meta, self.cfg, self.device, self.kind = meta, cfg, device, kind or SingleLabel()
        self.optimizer, self.scheduler, self.loss_fn, self.preprocess = optimizer, scheduler, loss_fn, preprocess
        self.hooks = HookList(hooks)
        self.dist = dist or DistInfo()
        self.stepper = GradientStep(optimizer, loss_fn, device, resolve_amp(cfg["amp"], device),
                                    cfg["accumulate_steps"], cfg["clip_gradient"], mix, distiller)
        self.monitor, self.max_epochs = cfg["monitor"], cfg["epochs"]
        self.epoch = self.start_epoch = self.train_batches = 0
        self.history: List[dict] = []
        self.stop_training, self.progress = False, True
        self._sums, self._count, self.val_outputs = None, 0, []
        self._resumed: Optional[dict] = None
        self._failure_logs: Dict[int, FailureLog] = {}  # per loader: a streamed file fails again every epoch
        self._ctrl_c = CtrlC()
        self.wrap()

    # ----------------------------------------------------------------- set-up and events
    def wrap(self) -> None:
        """(Re)build what the training step calls: compiled when asked, inside DDP under torchrun."""
        net = torch.compile(self.model) if self.cfg["compile"] else self.model
        if self.dist.enabled:
            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._net = net

    def call_hook(self, event: str, *args) -> None:
        """Call ``event`` on every hook that overrides it, in priority order."""
        self.hooks.call(event, self, *args)

    # ----------------------------------------------------------------- training
    def train(self, train_loader, val_loader) -> dict:
        """Train for the configured epochs (from ``start_epoch`` after a resume); return :meth:`summary`."""
        if self.finished:  # a resumed run that had already stopped
            return self.summary()
        self.train_batches = len(train_loader)
        self.call_hook("before_run")
        self._restore_hooks()
        try:
            with self._ctrl_c:
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

    def onTrainStep(self, loader, epoch: int) -> dict:
        """Train one epoch; return ``train_loss`` and ``train_acc`` averaged over every rank's images."""
        self._net.train()
        self._sums = torch.zeros(2, device=self.device)  # loss sum, correct: kept on the device, no sync per step
        self._count, batches = 0, len(loader)
        report = self._failure_log(loader)
        for step, batch in enumerate(loader):
            report(batch.failures)
            if batch.labels.numel() == 0:
                continue
            self.call_hook("before_train_iter", step, batch)
            x = self.preprocess(batch.images, train=True)
            y = batch.labels.to(self.device, non_blocking=True)
            outputs = self.stepper(self._net, x, y, step, batches, epoch)
            y = outputs["labels"]  # accuracy against each image's own label, also when mixing
            self._sums += torch.stack([outputs["loss"].float() * len(y), self.kind.hits(outputs["logits"], y)])
            self._count += len(y)
            self.call_hook("after_train_iter", step, batch, outputs)
            self._ctrl_c.check()
        totals = torch.cat([self._sums, torch.tensor([float(self._count)], device=self.device)])
        loss_sum, correct, count = all_reduce_sum(totals, self.dist).tolist()
        return {"train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}

    def _failure_log(self, loader) -> FailureLog:
        """The failure log of ``loader``, made on first use, so each unreadable file is reported once a run."""
        report = self._failure_logs.get(id(loader))
        if report is None or report.loader is not loader:
            report = self._failure_logs[id(loader)] = FailureLog(loader)
        return report

    def running_metrics(self) -> Tuple[float, float]:
        """This rank's mean loss and accuracy so far in the current epoch (synchronises the device)."""
        loss, acc = (self._sums / max(self._count, 1)).tolist()
        return loss, acc

    def onValidation(self, loader) -> dict:
        """Loss and the kind's metrics of ``eval_model`` over every rank's share: accuracy (and macro F1 when
        ``metrics`` has 'F1'); multi-label: exact match, samples-F1 and mAP."""
        tally = self.kind.tally(len(self.meta.class_names), self.device, self.cfg)
        totals = torch.zeros(2, device=self.device)  # loss sum, images
        model, self.val_outputs = self.inference(tta=False), []  # (logits, labels) per batch: for calibration
        report = self._failure_log(loader)
        for batch in loader:
            report(batch.failures)
            if batch.labels.numel() == 0:
                continue
            logits = model.logits(batch.images)
            y = batch.labels.to(self.device)
            totals[0] += self.loss_fn(logits, y).float() * len(y)
            totals[1] += len(y)
            tally.add(logits, y)
            self.val_outputs.append((logits, y))
        loss_sum, count = all_reduce_sum(totals, self.dist).tolist()
        return {"val_loss": loss_sum / max(count, 1), **tally.result(self.dist)}

    def checkpoint(self, epoch: int, metrics: dict) -> None:
        """Record the epoch and run the ``after_val_epoch`` hooks; the built-ins step the LR, track early
        stopping, log the epoch, write ``results.csv`` and the curves, and save ``last.pth`` / ``best.pth``."""
        self.history.append(metrics)
        self.call_hook("after_val_epoch", metrics)
        self._ctrl_c.check()

    def earlyStop(self, epoch: int, metrics: dict) -> bool:
        """True when a hook asked to stop: the early-stop hook does after ``early_stop_patient`` epochs in which
        the monitored metric did not improve."""
        return self.stop_training

    @property
    def optimizer_steps(self) -> int:
        return self.stepper.steps

    @property
    def finished(self) -> bool:
        return self.stop_training or self.start_epoch >= self.max_epochs

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything an exact resume needs: weights, optimizer, scheduler, scaler, history, hooks, RNG."""
        state = {"model": self.model.state_dict(), "meta": self.meta.to_dict(), "config": plain(self.cfg),
                 "epoch": self.epoch, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.stepper.scaler.state_dict(),
                 "history": list(self.history), "optimizer_steps": self.optimizer_steps,
                 "stopped": self.stop_training, "rng": rng_state(),
                 "hooks": self.hooks.state_dict()}
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
        self.stepper.scaler.load_state_dict(state["scaler"])
        self.history, self.start_epoch = list(state["history"]), state["epoch"] + 1
        self.stepper.steps, self.stop_training = state["optimizer_steps"], state["stopped"]
        set_rng_state(state["rng"])
        self._resumed = state
        log.info("resumed from %s at epoch %d", path, self.start_epoch + 1)

    def _restore_hooks(self) -> None:
        if self._resumed is None:
            return
        self.hooks.load_state_dict(self._resumed["hooks"])
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
        temperature = self.meta.temperature if self.cfg["calibrate"] else 1.0
        return InferenceModel(self.eval_model, self.meta, self.preprocess, self.stepper.amp_dtype,
                              self.cfg["TTA"] if tta is None else tta, temperature,
                              applied_thresholds(self.meta, self.cfg, temperature))

    def predict(self, loader) -> Iterator[Tuple[np.ndarray, np.ndarray, list]]:
        """Yield ``(indices, probabilities, failures)`` batch by batch (TTA when the config asks for it)."""
        return self.inference().predict_batches(loader)

    def evaluate(self, loader) -> dict:
        """Metrics (scikit-learn) on a labelled loader, plus the per-image labels and probabilities."""
        return self.inference().evaluate(loader)


def seed_all(seed: int) -> None:
    """Seed torch, Python's and NumPy's generators (``random_seed``), so that a run repeats."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict:
    """Every random generator training draws from: torch (shuffling, augmentation, dropout), CUDA, and Python's
    and NumPy's, which timm's RandomErasing and Mixup use. Stored as plain types and tensors (weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:  # checkpoints before these were saved hold torch's alone
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
