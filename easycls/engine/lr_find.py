"""The learning-rate range test (Smith 2015; fastai's lr_find): raise the learning rate exponentially, one batch at
a time, and watch the loss. The suggestion is the rate where the smoothed loss falls fastest, before it blows up.
"""
import logging
import math
from itertools import chain, repeat
from typing import Optional

import numpy as np
import pandas as pd

from easycls.core import files
from easycls.core.checkpoints import atomic_write
from easycls.evaluation.plots import plot_lr_find

log = logging.getLogger(__name__)


def lr_range_test(runner, loader, start: float = 1e-7, end: float = 10.0, iterations: int = 100,
                  smoothing: float = 0.9, diverge: float = 4.0) -> pd.DataFrame:
    """Train ``iterations`` batches (at most) with the learning rate going from ``start`` to ``end``; stop early
    when the smoothed loss exceeds ``diverge`` times its best. Returns one row per batch (lr, loss, smoothed)."""
    runner._net.train()
    rows, average, best = [], 0.0, math.inf
    batches = chain.from_iterable(repeat(loader))  # as many passes as the iterations need
    for i, batch in zip(range(iterations), batches):
        lr = start * (end / start) ** (i / max(iterations - 1, 1))
        for group in runner.optimizer.param_groups:
            group["lr"] = lr
        x = runner.preprocess(batch.images, train=True)
        y = batch.labels.to(runner.device, non_blocking=True)
        loss = float(runner.stepper(runner._net, x, y)["loss"])
        average = smoothing * average + (1 - smoothing) * loss
        smoothed = average / (1 - smoothing ** (i + 1))  # bias-corrected, as in Adam
        rows.append({"lr": lr, "loss": loss, "smoothed_loss": smoothed})
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or (i > 10 and smoothed > diverge * best):
            break
    return pd.DataFrame(rows)


def suggest(frame: pd.DataFrame) -> Optional[float]:
    """The learning rate of the steepest fall of the smoothed loss (against log lr), before its minimum."""
    frame = frame[np.isfinite(frame["smoothed_loss"])]
    stop = int(frame["smoothed_loss"].to_numpy().argmin()) + 1 if len(frame) else 0
    if stop < 3:
        return None
    head = frame.iloc[:stop]
    slope = np.gradient(head["smoothed_loss"].to_numpy(), np.log10(head["lr"].to_numpy()))
    return float(head["lr"].iloc[int(slope.argmin())])


def run_lr_find(runner, loader, cfg: dict) -> Optional[float]:
    """Run the test, write ``lr_find.csv`` and ``lr_find.png`` under ``save_dir``, and return the suggestion."""
    frame = lr_range_test(runner, loader)
    lr = suggest(frame)
    csv_path, png_path = files.out(cfg, files.LR_FIND_CSV), files.out(cfg, files.LR_FIND_PLOT)
    atomic_write(csv_path, lambda tmp: frame.to_csv(tmp, index=False))
    plot_lr_find(frame, png_path, lr)
    log.info("lr_find: %d batches, learning rate %.1e -> %.1e; wrote %s and %s", len(frame), frame["lr"].iloc[0],
             frame["lr"].iloc[-1], csv_path, png_path)
    return lr
