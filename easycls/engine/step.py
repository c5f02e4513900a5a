"""One training batch's arithmetic: autocast, the GradScaler, gradient accumulation, clipping, DDP ``no_sync``
and the guard against non-finite gradients, in the order backward -> unscale_ -> clip -> step -> update -> zero_grad.
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
    overflowed; without one (float32, bfloat16) a group whose gradients are not finite is skipped, and
    ``MAX_BAD_STEPS`` in a row stop training. Both decide from the gradients as the optimizer sees them, which under
    DDP are the all-reduced ones: every rank takes the same decision, also when only one rank's loss was NaN.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, device: torch.device,
                 amp_dtype: Optional[torch.dtype] = None, accumulate: int = 1, clip: float = 0.0,
                 mix: Optional[Callable] = None, distiller: Optional[Callable] = None):
        self.optimizer, self.loss_fn, self.device, self.mix = optimizer, loss_fn, device, mix
        self.distiller = distiller  # adds a teacher's term: distiller(inputs, logits, loss) -> loss
        self.amp_dtype, self.accumulate, self.clip = amp_dtype, accumulate, clip
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.steps = self.bad_steps = 0  # bad_steps: skipped steps in a row

    def __call__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_idx: int = 0, batches: int = 1,
                 epoch: int = 0, weight: float = 1.0) -> dict:
        """Train on one batch; return ``loss``, ``logits`` (detached), ``labels`` and ``inputs`` (the batch as the
        network saw it), ``targets`` (what the loss saw: soft when mixing), ``stepped`` and ``group_end`` (the last
        batch of its accumulation group: no gradients are pending after it). ``weight`` 0 runs the batch for its
        collectives alone: its gradients are zero."""
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
            self.scaler.scale(loss * weight / group).backward()  # always backward, so DDP ranks stay in step
        stepped = last and self._step(f"epoch {epoch + 1}, step {batch_idx + 1}")
        return {"loss": loss.detach(), "logits": logits.detach(), "labels": y, "inputs": x, "targets": target,
                "stepped": stepped, "group_end": last}

    def _step(self, where: str) -> bool:
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = None
        if self.clip or not self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)  # a no-op without fp16
            norm = nn.utils.get_total_norm([p.grad for p in params])
        if not self.scaler.is_enabled() and not torch.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            if self.bad_steps >= MAX_BAD_STEPS:
                raise TrainingError(f"the gradients are not finite (NaN or inf) at {where}, {MAX_BAD_STEPS} steps "
                                    f"in a row; lower learning_rate or set clip_gradient")
            return False
        self.bad_steps = 0
        if self.clip:
            nn.utils.clip_grads_with_norm_(params, self.clip, norm)
        self.scaler.step(self.optimizer)  # skipped by the scaler when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return True
