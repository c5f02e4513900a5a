"""The train command behind ``train.py`` and ``easycls-train``: one run, k-fold, or the LR range test."""
import gc
import os
import time

from easycls import api
from easycls.cli.common import run
from easycls.core.clock import process_start


def train(config, overrides: dict) -> int:
    started = process_start()  # a time_budget bounds the whole process, start-up and imports included
    result = api.train(config, progress=True, started=started, **overrides)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if result.monitor == "lr_find":
        _print_lr(result.best)
        return 0
    for fold in result.folds or [result]:
        _print_summary(fold)
    if "elapsed" in result.history:
        print(f"time budget: done {time.monotonic() - started:.1f} s after the start")
        # The interpreter's exit counts against the budget: skipping its last garbage collection over torch's many
        # objects took it from 5 s to 1 s on a busy 2-core machine. The run has closed its files already.
        gc.freeze()
    return 0


def _print_lr(lr) -> None:
    if lr is None:
        print("lr_find: the loss never fell; try a smaller batch_size or check the data")
        return
    print(f"suggested learning_rate: {lr:.1e} (trained nothing). To use it:\n"
          f"    python train.py learning_rate={lr:.2g}    (or set learning_rate={lr:.2g} in your config)")


def _print_summary(result: api.TrainResult) -> None:
    if result.best is not None:
        print(f"best epoch {result.best_epoch} of {result.epochs_run}: {result.monitor} = {result.best:.4f}")
    for name, path in result.files.items():
        print(f"  {name:<17} {path}")


def train_main(argv=None) -> int:
    """``python train.py``: train and validate a classifier."""
    return run(train, argv, "train.py", "Train an image classifier on class folders.")
