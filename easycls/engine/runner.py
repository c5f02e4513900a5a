"""ModelRunner: sequences the training events; all but the step itself is a hook (``engine/hooks/``). Per epoch:
``onTrainStep`` -> ``onValidation`` -> ``checkpoint`` (runs the ``after_val_epoch`` hooks) -> ``earlyStop``.
The parts (model, optimizer, scheduler, loss, preprocessing, hooks) are built by ``engine/builder.py`` and handed in.
"""
import logging
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from easycls.core import files
from easycls.core.checkpoints import ModelMeta, load_checkpoint, save_checkpoint
from easycls.core.device import resolve_amp
from easycls.core.distributed import DistInfo, all_reduce_sum, gather_to_main
from easycls.core.files import plain
from easycls.core.interrupts import CtrlC, TrainingInterrupted
from easycls.data.loaders import Batch, Preprocessor
from easycls.data.scan import FailureLog
from easycls.engine.hooks.base import Hook, HookList
from easycls.engine.resume import check_resumable, interrupted_state, restore_training_parts
from easycls.engine.rng import restore_rank_rng, rng_state
from easycls.engine.step import GradientStep
from easycls.engine.tracking import MONITORS
from easycls.evaluation.predictor import InferenceModel, applied_thresholds
from easycls.evaluation.targets import SingleLabel

log = logging.getLogger(__name__)


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
        self._resumed, self._resume_at = None, None  # a checkpoint's state; the batch an interrupted epoch resumes at
        self._stopped_at: Optional[dict] = None  # where Ctrl-C stopped training: {} after a whole epoch
        self._last_batch: Optional[Batch] = None  # stands in for a batch whose images were all unreadable
        self._compiled_eval: Optional[nn.Module] = None
        self._failure_logs: Dict[int, FailureLog] = {}  # per loader: a streamed file fails again every epoch
        self._ctrl_c = CtrlC()
        self.wrap()

    # ----------------------------------------------------------------- set-up and events
    def wrap(self) -> None:
        """(Re)build what the training step calls: compiled when asked, inside DDP under torchrun."""
        self._compiled = net = torch.compile(self.model) if self.cfg["compile"] else self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        self._net = DistributedDataParallel(net, device_ids=ids) if self.dist.enabled else net

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
        with self._ctrl_c:
            try:
                for epoch in range(self.start_epoch, self.max_epochs):
                    self._train_epoch(epoch, train_loader, val_loader)
                    if self._stopped_at is not None:
                        raise TrainingInterrupted(self._save_interrupted())
                    if self.earlyStop(epoch, self.history[-1]):
                        break
            except KeyboardInterrupt:  # a second Ctrl-C, mid-step: the state is not one to resume from
                log.warning("stopped at once by a second Ctrl-C; nothing saved (resume=True continues from last.pth)")
                raise
        self.call_hook("after_run")
        return self.summary()

    def _train_epoch(self, epoch: int, train_loader, val_loader) -> None:
        self.epoch, started = epoch, time.time()
        resume_at, self._resume_at = self._resume_at, None
        if resume_at:
            train_loader.set_epoch(epoch, resume_at["batch"])  # the batches after the interrupted one
        else:
            train_loader.set_epoch(epoch)
        self.call_hook("before_train_epoch")
        metrics = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                   **self.onTrainStep(train_loader, epoch, resume_at)}
        if self._stopped_at is not None:
            return
        self.call_hook("after_train_epoch")
        self.call_hook("before_val_epoch")
        metrics.update(self.onValidation(val_loader))
        metrics["seconds"] = round(time.time() - started, 3)
        self.checkpoint(epoch, metrics)

    def onTrainStep(self, loader, epoch: int, resume_at: Optional[dict] = None) -> dict:
        """Train one epoch (its batches from ``resume_at``, an interrupted epoch's position); return ``train_loss``
        and ``train_acc`` averaged over every rank's images, or {} when Ctrl-C stopped it after a step."""
        self._net.train()
        resume_at = resume_at or {"batch": 0, "sums": torch.zeros(2), "count": 0}
        # sums of loss and correct kept on the device (no sync per batch), and their image count
        first, self._sums, self._count = resume_at["batch"], resume_at["sums"].to(self.device), resume_at["count"]
        batches, report = first + len(loader), self._failure_log(loader)
        for step, batch in enumerate(loader, first):
            report(batch.failures)
            outputs = self._train_batch(step, batch, batches, epoch)
            # Ctrl-C is honoured where no gradients are pending: a point to resume from
            if outputs["group_end"] and self._ctrl_c.requested_on_any(self.dist, self.device):
                self._stopped_at = {"epoch": epoch, "batch": step + 1, "sums": self._sums.cpu(), "count": self._count}
                return {}
        totals = torch.cat([self._sums, torch.tensor([float(self._count)], device=self.device)])
        loss_sum, correct, count = all_reduce_sum(totals, self.dist).tolist()
        return {"train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}

    def _train_batch(self, step: int, batch: Batch, batches: int, epoch: int) -> dict:
        """One batch through the hooks and the step. A batch whose images were all unreadable is replaced by this
        rank's previous one at loss weight 0: the rank still joins the step's collectives (DDP's all-reduce), and
        its accumulation group ends where it would have; it counts in no metric."""
        weight = 1.0
        if batch.labels.numel() == 0:
            batch, weight = self._last_batch or blank_batch(self.meta), 0.0
        else:
            self._last_batch = batch
        self.call_hook("before_train_iter", step, batch)
        x = self.preprocess(batch.images, train=True)
        y = batch.labels.to(self.device, non_blocking=True)
        outputs = self.stepper(self._net, x, y, step, batches, epoch, weight)
        if weight:
            y = outputs["labels"]  # accuracy against each image's own label, also when mixing
            self._sums += torch.stack([outputs["loss"].float() * len(y), self.kind.hits(outputs["logits"], y)])
            self._count += len(y)
        self.call_hook("after_train_iter", step, batch, outputs)
        return outputs

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
        if self._ctrl_c.requested_on_any(self.dist, self.device):
            self._stopped_at = {}

    def earlyStop(self, epoch: int, metrics: dict) -> bool:
        """True when a hook asked to stop: the early-stop hook does after ``early_stop_patience`` epochs in which
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
        """Everything an exact resume needs: weights, optimizer, scheduler, scaler, history, hooks, and every rank's
        random generators (``rng``, a list in rank order, on rank 0). A collective under torchrun: every rank calls
        it, and rank 0 saves it."""
        state = {"model": self.model.state_dict(), "meta": self.meta.to_dict(), "config": plain(self.cfg),
                 "epoch": self.epoch, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.stepper.scaler.state_dict(),
                 "history": list(self.history), "optimizer_steps": self.optimizer_steps,
                 "stopped": self.stop_training, "rng": gather_to_main(rng_state(), self.dist),
                 "hooks": self.hooks.state_dict()}
        if self.eval_model is not self.model:
            state["eval_model"] = self.eval_model.state_dict()
        return state

    def _save_interrupted(self) -> str:
        """``interrupted.pth``: the state where Ctrl-C stopped training (after a step, or a whole epoch)."""
        path = files.out(self.cfg, files.INTERRUPTED)
        state = self.state_dict()
        if self.dist.is_main:
            state, where = interrupted_state(state, len(self.history), self._stopped_at, self.cfg, self.dist.world,
                                             self.stepper.bad_steps)
            save_checkpoint(state, path)
            log.info("interrupted %s; saved %s (resume=True continues from there)", where, path)
        return path

    def resume(self, path: str) -> None:
        """Restore weights, optimizer, scheduler, scaler, history, this rank's generators and, from
        ``interrupted.pth``, the position in the epoch; hook states (and the EMA weights) follow in
        :meth:`train`, once ``before_run`` has built what they restore into."""
        state = load_checkpoint(path)
        check_resumable(state, self.meta, self.cfg, self.dist.world, path)
        restore_training_parts(state, self.model, self.optimizer, self.scheduler, self.stepper, path)
        self.history, self.stop_training = list(state["history"]), state["stopped"]
        restore_rank_rng(state["rng"], self.dist.rank)
        self._resumed, position = state, state.get("position")
        self.start_epoch, self._resume_at = (position["epoch"], position) if position else (state["epoch"] + 1, None)
        where = f", batch {position['batch'] + 1}" if position else ""
        log.info("resumed from %s at epoch %d%s", path, self.start_epoch + 1, where)

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
        """``eval_model`` with this run's preprocessing and autocast, for evaluation and prediction (compiled when
        ``compile=True``: the training step's compiled module when it is the same model)."""
        temperature = self.meta.temperature if self.cfg["calibrate"] else 1.0
        return InferenceModel(self.eval_model, self.meta, self.preprocess, self.stepper.amp_dtype,
                              self.cfg["TTA"] if tta is None else tta, temperature,
                              applied_thresholds(self.meta, self.cfg, temperature), self._eval_network())

    def _eval_network(self) -> nn.Module:
        if self.eval_model is self.model:
            return self._compiled
        if self.cfg["compile"] and getattr(self._compiled_eval, "_orig_mod", None) is not self.eval_model:
            self._compiled_eval = torch.compile(self.eval_model)
        return self._compiled_eval if self.cfg["compile"] else self.eval_model

    def predict(self, loader) -> Iterator[Tuple[np.ndarray, np.ndarray, list]]:
        """Yield ``(indices, probabilities, failures)`` batch by batch (TTA when the config asks for it)."""
        return self.inference().predict_batches(loader)

    def evaluate(self, loader) -> dict:
        """Metrics (scikit-learn) on a labelled loader, plus the per-image labels and probabilities."""
        return self.inference().evaluate(loader)


def blank_batch(meta: ModelMeta) -> Batch:
    """Two black images (BatchNorm trains on more than one), standing in for an unreadable first batch."""
    zeros = torch.zeros(2, dtype=torch.long)
    return Batch(torch.zeros((2, meta.channels, *meta.img_size), dtype=torch.uint8), zeros, zeros, [])
