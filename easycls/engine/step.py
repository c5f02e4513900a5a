"""One training batch's arithmetic: autocast, the GradScaler, gradient accumulation, clipping, DDP ``no_sync``
and the guard against non-finite losses, in the order backward -> unscale_ -> clip -> step -> update -> zero_grad.
"""
from contextlib import nullcontext
from typing import Callable, Optional

import torch
import torch.nn as nn

from easycls.core.device import autocast
from easycls.core.errors import TrainingError

MAX_BAD_STEPS = 3


class GradientStep:
    """Forward and backward of one batch; the optimizer steps on the last batch of each group of ``accumulate``
    batches (and on an epoch's last batch), each batch's loss divided by its group's size.

    ``steps`` counts the optimizer steps taken. With ``amp_dtype`` float16 a GradScaler skips steps whose gradients
    overflowed; without one (float32, bfloat16) a group whose loss was not finite is skipped, and ``MAX_BAD_STEPS``
    in a row stop training.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, device: torch.device,
                 amp_dtype: Optional[torch.dtype] = None, accumulate: int = 1, clip: float = 0.0,
                 mix: Optional[Callable] = None, distiller: Optional[Callable] = None):
        self.optimizer, self.loss_fn, self.device, self.mix = optimizer, loss_fn, device, mix
        self.distiller = distiller  # adds a teacher's term: distiller(inputs, logits, loss) -> loss
        self.amp_dtype, self.accumulate, self.clip = amp_dtype, accumulate, clip
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.steps = 0
        self._bad_steps, self._group_finite = 0, True

    def __call__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_idx: int = 0, batches: int = 1,
                 epoch: int = 0) -> dict:
        """Train on one batch; return ``loss``, ``logits`` (detached), ``labels`` and ``inputs`` (the batch as the
        network saw it), ``targets`` (what the loss saw: soft when mixing) and ``stepped``."""
        target = y
        if self.mix is not None:
            if len(x) % 2:  # timm's Mixup pairs images: an odd last image sits this batch out
                x, y = x[:-1], y[:-1]
            x, target = self.mix(x, y)
        start = batch_idx - batch_idx % self.accumulate
        group = min(self.accumulate, batches - start)
        last = batch_idx + 1 >= start + group
        # Under DDP gradients are all-reduced only on the stepping batch; the others accumulate locally.
        with nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync():
            with autocast(self.device, self.amp_dtype):
                logits = net(x)
                loss = self.loss_fn(logits, target)
                if self.distiller is not None:
                    loss = self.distiller(x, logits, loss)
            self.scaler.scale(loss / group).backward()  # always backward, so DDP ranks stay in step
        if not self.scaler.is_enabled() and not torch.isfinite(loss):
            self._group_finite = False
        stepped = last and self._step(f"epoch {epoch + 1}, step {batch_idx + 1}")
        return {"loss": loss.detach(), "logits": logits.detach(), "labels": y, "inputs": x, "targets": target,
                "stepped": stepped}

    def _step(self, where: str) -> bool:
        if not self._group_finite:
            self.optimizer.zero_grad(set_to_none=True)
            self._group_finite, self._bad_steps = True, self._bad_steps + 1
            if self._bad_steps >= MAX_BAD_STEPS:
                raise TrainingError(f"loss is not finite (NaN or inf) at {where}, {MAX_BAD_STEPS} steps in a row; "
                                    f"lower learning_rate or set clip_gradient")
            return False
        self._bad_steps = 0
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], self.clip)
        self.scaler.step(self.optimizer)  # skipped by the scaler when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return True
