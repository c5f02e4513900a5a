"""The hook of a run with ``time_budget``: the learning rate over time, the stop rule and the record of both.

Before every batch it sets the learning rate for the run's progress (:class:`~easycls.engine.budget.TimeBudget`),
so the schedule reaches its floor as the training time ends. It measures what each epoch's validation and writes
take, which the budget keeps in reserve, and stops between epochs when the next one would have no training time
left (the :class:`~easycls.engine.budget.DeadlineLoader` ends an epoch mid-way at the deadline). Each epoch's row
of ``results.csv`` gets ``elapsed`` (seconds since the budget's clock started) and ``lr_end`` (the learning rate
of its last batch); at the end, ``lr.png`` shows the planned and the actual learning rate against time.

:class:`AnnealBeforeStopHook` turns an early stop into one more epoch over which the rate anneals to its floor,
so that a budgeted run, however it ends, ends with an annealed model.
"""
import logging
from typing import List, Optional, Tuple

from easycls.core import files
from easycls.core.clock import format_duration
from easycls.engine.hooks.base import Hook
from easycls.evaluation.plots import plot_lr_time

log = logging.getLogger(__name__)
PLAN_POINTS = 200


class BudgetHook(Hook):
    """Drives a :class:`~easycls.optim.schedulers.TimeScheduler` from a :class:`TimeBudget` and stops in time."""

    priority = 30  # the learning rate's slot: a budget run has no ParamSchedulerHook

    def __init__(self, budget):
        self.budget = budget
        self.actual: List[Tuple[float, float]] = []   # (seconds since the clock started, learning rate) per batch
        self.planned: List[Tuple[float, float]] = []  # the same, as planned at the first batch
        self.epoch_starts: List[float] = []
        self.scheduler = None
        self._train_end: Optional[float] = None
        self._val_end: Optional[float] = None

    def status(self) -> dict:
        """What the progress bar shows: the time left."""
        return {"left": format_duration(self.budget.left())}

    def before_run(self, runner) -> None:
        budget = self.budget
        budget.device = runner.device
        budget.start(runner.start_epoch * runner.train_batches, runner.max_epochs * runner.train_batches)
        self.scheduler = runner.scheduler
        self.planned = self._plan()
        if runner.dist.is_main:
            log.info("time budget %s: training from %.1f s to %.1f s, then %.1f s for the last validation, writes "
                     "and exit; learning rate %s over time%s, at most %d epochs",
                     format_duration(budget.seconds), budget.train_start - budget.started,
                     budget.training_end() - budget.started, budget.reserve(), runner.scheduler.shape,
                     f" after a {runner.scheduler.warmup:.0%} warm-up" if runner.scheduler.warmup else "",
                     runner.max_epochs)

    def _plan(self) -> List[Tuple[float, float]]:
        """The learning rate against time as planned now: the schedule over the training time left."""
        budget, scheduler = self.budget, self.scheduler
        begin, span = budget.train_start - budget.started, budget.training_end() - budget.train_start
        start, base = budget.reached, scheduler.base_lrs[0]
        shares = [i / PLAN_POINTS for i in range(PLAN_POINTS + 1)]
        return [(begin + f * span, base * scheduler.factor(start + (1 - start) * f)) for f in shares]

    def before_train_epoch(self, runner) -> None:
        now = self.budget.now()
        if self._val_end is not None:
            self.budget.record("writes", now - self._val_end)
        self.epoch_starts.append(now - self.budget.started)

    def before_train_iter(self, runner, batch_idx, batch) -> None:
        runner.scheduler.set_progress(self.budget.tick())
        self.actual.append((self.budget.elapsed(), runner.optimizer.param_groups[0]["lr"]))

    def after_train_epoch(self, runner) -> None:
        self.budget.pause()
        self._train_end = self.budget.now()

    def after_val_epoch(self, runner, metrics) -> None:
        budget = self.budget
        metrics["elapsed"] = round(budget.elapsed(), 2)
        metrics["lr_end"] = self.actual[-1][1] if self.actual else metrics["lr"]
        self._val_end = budget.now()
        budget.record("val", self._val_end - self._train_end)
        if budget.done >= budget.total:  # the last epoch: the run ends anyway
            return
        # this epoch's remaining hooks and the next epoch's first batches must fit, else it would be all validation
        if budget.no_time_for_another_epoch() and not runner.stop_training:
            runner.stop_training = True
            if runner.dist.is_main:
                log.info("time budget: no training time left for another epoch after epoch %d (%.1f s after the "
                         "start; training ends at %.1f s)", runner.epoch + 1, budget.elapsed(),
                         budget.training_end() - budget.started)

    def after_run(self, runner) -> None:
        if not runner.dist.is_main or not self.actual:
            return
        budget, peak = self.budget, runner.scheduler.base_lrs[0]
        last = self.actual[-1][1]
        log.info("time budget %s: %d epochs, training ended at %.1f s with the learning rate at %.3g (%.2g%% of "
                 "its peak); %.1f s left for the last writes and the exit", format_duration(budget.seconds),
                 len(runner.history), self._train_end - budget.started, last, 100 * last / peak, budget.left())
        plot_lr_time(self.actual, self.planned, self.epoch_starts, budget.seconds,
                     budget.training_end() - budget.started, files.out(runner.cfg, files.LR_PLOT))

    def state_dict(self) -> dict:
        return {"progress": self.budget.reached}

    def load_state_dict(self, state: dict) -> None:
        """A resumed run continues the schedule from where it stopped, over this run's budget."""
        self.budget.continue_from(state["progress"])
        if self.scheduler is not None:
            self.planned = self._plan()


class AnnealBeforeStopHook(Hook):
    """Under a time budget, an early stop comes one epoch later: over that epoch the learning rate goes from where
    it is to its floor (:meth:`TimeBudget.finish_within`), then the run stops. Nothing changes when the rate is
    already at its floor, the epochs are used up, or the time left would not hold one more epoch."""

    priority = 45  # after EarlyStopHook (40) has decided, before the checkpoints (50) record the decision

    def __init__(self, budget):
        self.budget = budget
        self.annealing = False

    def after_val_epoch(self, runner, metrics) -> None:
        budget = self.budget
        if self.annealing:  # the annealing epoch has run: stop, improved or not
            runner.stop_training = True
            return
        if not runner.stop_training or budget.done >= budget.total or runner.scheduler.progress >= 1.0:
            return
        if budget.no_time_for_another_epoch():  # BudgetHook stopped the run
            return
        runner.stop_training, self.annealing = False, True
        budget.finish_within(runner.train_batches)
        if runner.dist.is_main:
            log.info("time budget: the early stop comes after one more epoch, over which the learning rate anneals "
                     "from %.3g to its floor", runner.optimizer.param_groups[0]["lr"])
