"""ModelRunner: the training loop as a template method, plus the evaluation and prediction entry points.

``train`` runs, for every epoch and in this order: ``onTrainStep`` (one epoch) -> ``onValidation`` -> scheduler
step -> ``checkpoint`` -> ``earlyStop``. Customise by subclassing one of those methods or by passing your own
``loss_fn`` / ``optimizer`` / ``scheduler``; the per-batch work is ``_train_batch``.
"""
import logging
import os
import time
from typing import Iterator, Optional, Tuple

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .checkpoints import atomic_write, load_checkpoint, save_checkpoint
from .config import MONITORS
from .data import BatchAugment, Preprocessor
from .distributed import DistInfo, all_reduce_sum
from .errors import CheckpointError, TrainingError
from .losses import create_loss
from .metrics import compute_metrics
from .models import set_backbone_trainable
from .optim import create_optimizer
from .plots import plot_curves
from .schedulers import create_scheduler
from .tracking import CheckpointSaver, EarlyStopper

log = logging.getLogger(__name__)
MAX_BAD_STEPS = 3
RESUME_MUST_MATCH = ("model_name", "class_names", "img_size", "channels")


class TrainingInterrupted(Exception):
    """Ctrl-C during training; ``path`` is the checkpoint that was saved so the run can resume."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


def resolve_amp(setting: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype: fp16 on CUDA for 'auto', nothing on CPU unless bf16 is asked for."""
    if setting == "off" or (device.type != "cuda" and setting in ("auto", "fp16")):
        if setting == "fp16":
            log.info("amp='fp16' needs CUDA; training in float32 on %s", device)
        return None
    if setting == "bf16":
        return torch.bfloat16
    return torch.float16


class ModelRunner:
    """Trains, validates, evaluates and predicts with one model.

    Args:
        model: an ``nn.Module`` classifier (see :func:`easycls.models.create_model`).
        meta: model_name, class_names, img_size, channels, mean and std; saved in every checkpoint.
        cfg: the validated config dict.
        device: where to run; CPU or CUDA.
        dist: this process's rank and world size under torchrun.
        loss_fn, optimizer, scheduler: optional replacements for the ones the config names.
    """

    def __init__(self, model: nn.Module, meta: dict, cfg: dict, device: torch.device,
                 dist: Optional[DistInfo] = None, loss_fn: Optional[nn.Module] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, scheduler=None):
        self.cfg, self.meta, self.device = cfg, meta, device
        self.dist = dist or DistInfo()
        channels_last = cfg["channels_last"]
        if cfg["sync_bn"] and self.dist.enabled:
            if device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same Parameters, same state_dict keys
            elif self.dist.is_main:
                log.warning("sync_bn=True needs CUDA (torch's SyncBatchNorm is GPU-only); on CPU each process "
                            "keeps its own BatchNorm statistics")
        self.module = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        self.amp_dtype = resolve_amp(cfg["amp"], device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        augment = None if cfg["augment"] == "none" else BatchAugment(cfg["augment"], cfg["hflip"])
        self.preprocess = Preprocessor(meta["mean"], meta["std"], meta["channels"], device, channels_last, augment)
        self.loss_fn = (loss_fn or create_loss(cfg["loss"], cfg["label_smooth"], cfg["class_weight"])).to(device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.monitor = cfg["monitor"]
        self.stopper = EarlyStopper(MONITORS[self.monitor], cfg["early_stop_patient"])
        self.saver = CheckpointSaver(cfg["save_dir"], MONITORS[self.monitor], cfg["save_best_only"],
                                     cfg["save_one_only"])
        self.history, self.start_epoch, self.frozen = [], 0, False
        self.progress = True
        self._bad_steps = 0
        self._reported = set()
        self._compiled = torch.compile(self.module) if cfg["compile"] else self.module
        self.model = self._wrap()

    # ----------------------------------------------------------------- set-up
    def _wrap(self) -> nn.Module:
        """The module that training calls: compiled if asked, inside DDP under torchrun."""
        if not self.dist.enabled:
            return self._compiled
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self._compiled, device_ids=ids)

    def _ensure_training_parts(self) -> None:
        cfg = self.cfg
        if self.optimizer is None:
            self.optimizer = create_optimizer(cfg["optimizer"], self.module, cfg["learning_rate"],
                                              cfg["weight_decay"])
        if self.scheduler is None:
            self.scheduler = create_scheduler(cfg["scheduler"], self.optimizer, cfg["epochs"], cfg["warmup_epoch"],
                                              MONITORS[self.monitor])

    def _apply_freeze(self, epoch: int) -> None:
        frozen = epoch < self.cfg["freeze_nonlinear_epoch"]
        if frozen == self.frozen:
            return
        set_backbone_trainable(self.module, not frozen)
        self.frozen = frozen
        self.model = self._wrap()  # DDP must see the new set of trainable parameters
        log.info("epoch %d: %s", epoch + 1, "training the classifier only" if frozen else "training all layers")

    # ----------------------------------------------------------------- training
    def train(self, train_loader, val_loader) -> dict:
        """Train for the configured epochs (from ``start_epoch`` after a resume); return :meth:`summary`."""
        self._ensure_training_parts()
        if self.finished:  # a resumed run that had already stopped
            return self.summary()
        epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, self.cfg["epochs"]):
                started = time.time()
                self._apply_freeze(epoch)
                train_loader.set_epoch(epoch)
                lr = self.optimizer.param_groups[0]["lr"]
                metrics = {"epoch": epoch + 1, "lr": lr, **self.onTrainStep(train_loader, epoch),
                           **self.onValidation(val_loader)}
                metrics["seconds"] = round(time.time() - started, 3)
                self.scheduler.step(metrics[self.monitor])
                self.checkpoint(epoch, metrics)
                if self.earlyStop(epoch, metrics):
                    break
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._save_interrupted(epoch)) from None
        return self.summary()

    def onTrainStep(self, loader, epoch: int) -> dict:
        """Train one epoch; return ``train_loss`` and ``train_acc`` averaged over every rank's images."""
        self.model.train()
        totals = torch.zeros(2, device=self.device)  # loss sum, correct (kept on the device: no sync per step)
        count = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.cfg['epochs']}", leave=False, dynamic_ncols=True,
                   disable=not (self.progress and self.dist.is_main))
        for step, batch in enumerate(bar):
            self._report_failures(batch, loader)
            if batch.labels.numel() == 0:
                continue
            x = self.preprocess(batch.images, train=True)
            y = batch.labels.to(self.device, non_blocking=True)
            loss, logits = self._train_batch(x, y, epoch, step)
            totals += torch.stack([loss.detach().float() * len(y), (logits.argmax(1) == y).sum()])
            count += len(y)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{totals[0] / count:.4f}", acc=f"{totals[1] / count:.4f}")
        totals = torch.cat([totals, torch.tensor([float(count)], device=self.device)])
        loss_sum, correct, count = all_reduce_sum(totals, self.dist).tolist()
        return {"train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}

    def _train_batch(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int):
        """Forward, backward, unscale, clip, step, update, zero_grad; skips steps whose loss is not finite."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
        self.scaler.scale(loss).backward()  # always backward, so DDP ranks stay in step
        if self.amp_dtype is None and not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self._bad_steps += 1
            if self._bad_steps >= MAX_BAD_STEPS:
                raise TrainingError(f"loss is not finite (NaN or inf) at epoch {epoch + 1}, step {step + 1}, "
                                    f"{MAX_BAD_STEPS} steps in a row; lower learning_rate or set clip_gradient")
            return loss, logits
        self._bad_steps = 0
        if self.cfg["clip_gradient"]:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg["clip_gradient"])
        self.scaler.step(self.optimizer)  # skipped by the scaler when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, logits

    def onValidation(self, loader) -> dict:
        """Loss, accuracy (and macro F1 when ``metrics`` has 'F1') over every rank's share of ``loader``."""
        n = len(self.meta["class_names"])
        confusion = torch.zeros(n * n, device=self.device)
        loss_sum = torch.zeros(1, device=self.device)
        self._compiled.eval()
        for batch in loader:
            if batch.labels.numel() == 0:
                continue
            logits = self._logits(batch.images)
            y = batch.labels.to(self.device)
            loss_sum += self.loss_fn(logits, y).float() * len(y)
            confusion += torch.bincount(y * n + logits.argmax(1), minlength=n * n)
        all_reduce_sum(confusion, self.dist)
        all_reduce_sum(loss_sum, self.dist)
        cm = confusion.reshape(n, n).double()
        out = {"val_loss": loss_sum.item() / max(cm.sum().item(), 1),
               "val_acc": (cm.diag().sum() / cm.sum().clamp(min=1)).item()}
        if "F1" in self.cfg["metrics"] or self.monitor == "val_f1":
            f1 = 2 * cm.diag() / (cm.sum(0) + cm.sum(1)).clamp(min=1)
            out["val_f1"] = f1.mean().item()
        return out

    def checkpoint(self, epoch: int, metrics: dict) -> None:
        """Record the epoch; rank 0 writes last/best checkpoints, results.csv and the curves."""
        self.history.append(metrics)
        if not self.dist.is_main:
            return
        log.info("epoch %d/%d  %s", epoch + 1, self.cfg["epochs"],
                 "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch"))
        if self.saver.save(self._state(epoch), epoch, metrics[self.monitor]):
            log.info("epoch %d: new best %s %.4f", epoch + 1, self.monitor, metrics[self.monitor])
        self._write_results()

    def earlyStop(self, epoch: int, metrics: dict) -> bool:
        """True when the monitored metric has not improved for ``early_stop_patient`` epochs."""
        self.stopper.update(metrics[self.monitor], epoch)
        if self.stopper.should_stop:
            log.info("early stop after epoch %d: %s did not improve for %d epochs; best epoch %d (%.4f)",
                     epoch + 1, self.monitor, self.stopper.patience, self.stopper.best_epoch + 1, self.stopper.best)
        return self.stopper.should_stop

    @property
    def finished(self) -> bool:
        return self.stopper.should_stop or self.start_epoch >= self.cfg["epochs"]

    # ----------------------------------------------------------------- outputs and state
    def _write_results(self) -> None:
        save_dir = self.cfg["save_dir"]
        frame = pd.DataFrame(self.history)
        atomic_write(os.path.join(save_dir, "results.csv"), lambda tmp: frame.to_csv(tmp, index=False))
        plot_curves(self.history, os.path.join(save_dir, "loss.png"), ["train_loss", "val_loss"], "loss")
        acc_keys = ["train_acc", "val_acc"] + (["val_f1"] if "val_f1" in frame else [])
        plot_curves(self.history, os.path.join(save_dir, "acc.png"), acc_keys, "accuracy")

    def _state(self, epoch: int) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"model": self.module.state_dict(), "meta": self.meta, "config": self.cfg, "epoch": epoch,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "history": list(self.history), "rng": rng}

    def _save_interrupted(self, epoch: int) -> str:
        path = os.path.join(self.cfg["save_dir"], "interrupted.pth")
        if self.dist.is_main:
            state = {**self._state(len(self.history) - 1), "interrupted": True}  # last completed epoch
            save_checkpoint(state, path)
            log.info("interrupted during epoch %d; saved %s (resume=True continues from it)", epoch + 1, path)
        return path

    def resume(self, path: str) -> None:
        """Restore model, optimizer, scheduler, scaler, history, early-stop state and RNG from ``path``."""
        self._ensure_training_parts()
        state = load_checkpoint(path)
        if "optimizer" not in state:
            raise CheckpointError(f"{path} holds weights only (no optimizer state); resume from last.pth")
        changed = [f"{k}: {state['meta'].get(k)!r} -> {self.meta[k]!r}" for k in RESUME_MUST_MATCH
                   if state["meta"].get(k) != self.meta[k]]
        if changed:
            raise CheckpointError(f"cannot resume from {path}: " + "; ".join(changed))
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        for row in self.history:  # early-stop and best-checkpoint state follow from the history
            self.stopper.update(row[self.monitor], row["epoch"] - 1)
            self.saver.tracker.update(row[self.monitor], row["epoch"] - 1)
        self.start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        log.info("resumed from %s at epoch %d", path, self.start_epoch + 1)

    def summary(self) -> dict:
        """Best epoch, its metric and where the outputs are."""
        save_dir = self.cfg["save_dir"]
        return {"best_epoch": self.stopper.best_epoch + 1, "monitor": self.monitor, "best": self.stopper.best,
                "epochs_run": len(self.history),
                "files": {name: os.path.join(save_dir, name) for name in
                          ("best.pth", "best.safetensors", "last.pth", "results.csv", "loss.png", "acc.png")}}

    # ----------------------------------------------------------------- inference
    def _report_failures(self, batch, loader) -> None:
        """Name each file that failed to decode while streaming, once per run; it is left out of the batch."""
        for index, reason in batch.failures:
            path = loader.dataset.samples.paths[index]
            if path not in self._reported:
                self._reported.add(path)
                log.warning("skipped %s: %s", path, reason)

    @torch.inference_mode()
    def _logits(self, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
        x = self.preprocess(images)
        if flip:
            x = x.flip(3)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return self._compiled(x).float()

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(self._logits(images), dim=1)
        if self.cfg["TTA"]:
            probs = (probs + F.softmax(self._logits(images, flip=True), dim=1)) / 2
        return probs

    def predict(self, loader) -> Iterator[Tuple[np.ndarray, np.ndarray, list]]:
        """Yield ``(indices, probabilities, failures)`` batch by batch (TTA when the config asks for it)."""
        self._compiled.eval()
        for batch in loader:
            probs = self._probs(batch.images).cpu().numpy() if len(batch.index) else np.zeros((0, 0))
            yield batch.index.numpy(), probs, batch.failures

    def evaluate(self, loader) -> dict:
        """Metrics (scikit-learn) on a labelled loader, plus the per-image labels and probabilities."""
        labels, probs, failures = [], [], []
        self._compiled.eval()
        for batch in loader:
            failures += batch.failures
            if len(batch.index):
                labels.append(batch.labels.numpy())
                probs.append(self._probs(batch.images).cpu().numpy())
        if not labels:
            raise TrainingError("no readable images to evaluate")
        y, p = np.concatenate(labels), np.concatenate(probs)
        metrics = compute_metrics(y, p, self.meta["class_names"])
        metrics["unreadable"] = len(failures)
        return {"metrics": metrics, "labels": y, "probs": p, "failures": failures}
