"""The clock of a run with ``time_budget``: how much training time is left, the progress that plans the learning
rate, and the loader that ends the last epoch at the training deadline.

The budget counts from the start of the process (the command line) or of the ``easycls.train`` call. Training must
end early enough for the last validation, calibration, checkpoint writes, the report and the exit: the
*reserve*. Until the first epoch has measured them, they are estimated from the throughput probe.
"""
import logging
import time
from collections import deque
from typing import Callable, Optional

import torch

from easycls.core.clock import parse_duration
from easycls.core.distributed import DistInfo, all_reduce_sum
from easycls.core.errors import ConfigError
from easycls.models.auto import AUTO
from easycls.optim.schedulers import time_shape

log = logging.getLogger(__name__)
EXIT_SECONDS = 0.5   # the summary and the interpreter's exit (train.py freezes the garbage collector for it)
MARGIN = 0.005       # of the budget: the noise of a shared machine
TAIL_SAFETY = 1.15   # the last validation and writes may run slower than the slowest one measured
VAL_SPEEDUP = 3.0    # validation images per second against training's (forward only), until measured
WRITE_SECONDS = 1.0  # checkpoints, results.csv and the curves, until measured
SYNC_EVERY = 8       # under torchrun, the ranks agree on the deadline every this many batches


def check_budget_config(cfg: dict) -> None:
    """One-line errors for what a time budget cannot do, before anything is read or written."""
    budget = parse_duration(cfg["time_budget"])
    if cfg["model_name"] == AUTO and not budget:
        raise ConfigError("model_name='auto' picks the model that fits a time budget; set time_budget (such as "
                          "'10m') or name a model")
    if not budget:
        return
    time_shape(cfg["scheduler"])
    if cfg["model_name"] == AUTO and cfg["pretrained"]:
        raise ConfigError("model_name='auto' trains its candidates from scratch; set pretrained='' or name a model")
    if not cfg["val_path"] and cfg["label_type"] == "DIR" and cfg["val_fold"] is None:
        raise ConfigError("time_budget bounds one training run; with val_path='' (k-fold) train one fold a run, "
                          "each with its own budget: val_fold=N")


class TimeBudget:
    """The deadline of a run and the times it measures on the way (``time.monotonic()`` readings throughout).

    Between two epochs' training come ``val`` (validation) and ``writes`` (calibration, results.csv, the curves,
    the checkpoints): estimated, then the slowest measured. The reserve after training holds both, ``writes``
    again for what follows the last epoch (``lr.png``, ``report.html``: about as much writing) and the exit.
    Progress, in [0, 1], is the share of the training time spent (from the first batch to :meth:`training_end`)
    or of the epochs' batches done, whichever is further, so the schedule ends with the budget or the last epoch,
    whichever comes first. When a measurement moves the training end, the rest of the schedule is planned over the
    time then left, from the progress reached: the learning rate never jumps. A resumed run's progress starts
    where the earlier run's stopped.
    """

    def __init__(self, seconds: float, started: float, dist: Optional[DistInfo] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds, self.started, self.deadline, self.clock = seconds, started, started + seconds, clock
        self.dist = dist or DistInfo()
        self.device = torch.device("cpu")  # where the ranks' agreement is all-reduced: the runner's device
        self.val, self.writes, self.measured = 0.0, WRITE_SECONDS, set()
        self.batch_seconds, self.recent = 0.0, deque(maxlen=8)  # mean and last few seconds a training batch
        self.train_start: Optional[float] = None
        self.done, self.total, self.reached = 0, 1, 0.0
        self._batch_anchor = (0, 0.0)  # (batches done, progress) the batch share is counted from
        self._anchor = (0.0, 0.0, 0.0)  # (time, progress, training end) the time progress is planned from
        self._last_tick: Optional[float] = None

    def now(self) -> float:
        return self.clock()

    def elapsed(self) -> float:
        """Seconds since the budget's clock started."""
        return self.now() - self.started

    def left(self) -> float:
        """Seconds to the deadline."""
        return self.deadline - self.now()

    def reserve(self) -> float:
        """Seconds kept after training for the last validation, the writes and the exit."""
        return (self.val + self.writes) * TAIL_SAFETY + self.writes + EXIT_SECONDS + MARGIN * self.seconds

    def training_end(self) -> float:
        """When the last training batch must have finished."""
        return self.deadline - self.reserve()

    def estimate_validation(self, val_images: float, images_per_second: float) -> None:
        """Before the first epoch: validation at ``VAL_SPEEDUP`` x the training throughput."""
        if "val" not in self.measured:
            self.val = val_images / (images_per_second * VAL_SPEEDUP)

    def record(self, part: str, seconds: float) -> None:
        """A measured ``'val'`` or ``'writes'``: the first replaces the estimate, later ones can only raise it."""
        setattr(self, part, max(getattr(self, part), seconds) if part in self.measured else seconds)
        self.measured.add(part)

    # ------------------------------------------------------------------ training
    def start(self, done: int, total: int) -> None:
        """The first batch, with ``done`` of the epochs' ``total`` batches behind it (a resume)."""
        self.train_start, self.done, self.total = self.now(), done, max(1, total)
        self.continue_from(self.reached)

    def continue_from(self, progress: float) -> None:
        """Plan the rest of the schedule, from ``progress``, over the training time left from now."""
        self.reached = progress
        self._anchor = (self.now(), progress, self.training_end())

    def progress(self) -> float:
        """The share of the run done, in [0, 1]; it never goes back."""
        if self._anchor[2] != self.training_end():  # a new measurement moved the end
            self.continue_from(self.reached)
        since, start, end = self._anchor
        by_time = start + (1 - start) * (self.now() - since) / max(end - since, 1e-6)
        done, start = self._batch_anchor
        by_batches = start + (1 - start) * (self.done - done) / max(self.total - done, 1)
        self.reached = min(1.0, max(self.reached, by_time, by_batches))
        return self.reached

    def finish_within(self, batches: int) -> None:
        """End the schedule ``batches`` batches from now (an early stop anneals first): from the progress reached to
        1 over them, or sooner if the time runs out first."""
        self._batch_anchor = (self.done, self.reached)
        self.total = self.done + max(1, batches)

    def tick(self) -> float:
        """Before each training batch: count it, time the previous one, and return the progress."""
        now = self.now()
        if self._last_tick is not None:
            took = now - self._last_tick
            self.batch_seconds = took if not self.batch_seconds else 0.8 * self.batch_seconds + 0.2 * took
            self.recent.append(took)
        self._last_tick = now
        progress = self.progress()
        self.done += 1
        return progress

    def look_ahead(self) -> float:
        """How far ahead the deadline is checked: one batch (the slowest of the last few, on a machine that others
        share), or under torchrun the ``SYNC_EVERY`` batches until the ranks next agree."""
        batch = max(self.recent, default=self.batch_seconds)
        return batch * (SYNC_EVERY if self.dist.enabled else 1)

    def pause(self) -> None:
        """The epoch's training ended: the next batch's time is not measured from here."""
        self._last_tick = None

    def no_time_for_another_epoch(self) -> bool:
        """After a validation: whether the rest of this epoch's hooks (its writes) and the next epoch's first batch
        would run past the training deadline (agreed by every rank under torchrun)."""
        return self.over(ahead=self.writes + self.look_ahead())

    def over(self, ahead: float = 0.0) -> bool:
        """Whether training must stop ``ahead`` seconds from now (agreed by every rank under torchrun)."""
        late = self.now() + ahead >= self.training_end() or self.done >= self.total
        if not self.dist.enabled:
            return late
        flag = torch.tensor([float(late)], device=self.device)
        return all_reduce_sum(flag, self.dist).item() > 0


class DeadlineLoader:
    """A training loader whose epoch ends early when the next batch would not finish before the training deadline.

    Under torchrun the ranks check every ``SYNC_EVERY`` batches, looking that many batches ahead, so that every rank
    stops at the same batch.
    """

    def __init__(self, loader, budget: TimeBudget):
        self.loader, self.budget = loader, budget
        self.epoch, self.cut = 0, None  # cut: the batch the deadline ended the last epoch at

    @property
    def samples(self):
        return self.loader.samples

    @property
    def dataset(self):
        return self.loader.dataset

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        every = SYNC_EVERY if self.budget.dist.enabled else 1
        for step, batch in enumerate(self.loader):
            if step % every == 0 and self.budget.over(ahead=self.budget.look_ahead()):
                self.cut = step
                if self.budget.dist.is_main:
                    log.info("time budget: epoch %d ends after %d of %d batches, %.1f s after the start: the "
                             "training time is over", self.epoch + 1, step, len(self), self.budget.elapsed())
                return
            yield batch
