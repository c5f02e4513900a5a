"""time_budget: durations, the clock, the LR schedule over time, the stop rule, the probe, 'auto', the outputs."""
import json
import math
import pathlib
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import ROOT, tiny_cfg

import easycls
from easycls.config import make_config
from easycls.config.schema import defaults
from easycls.core.clock import format_duration, parse_duration, process_start
from easycls.core.distributed import DistInfo
from easycls.core.errors import ConfigError
from easycls.engine import budget as budget_module
from easycls.engine import builder, probe
from easycls.engine.budget import EXIT_SECONDS, MARGIN, TAIL_SAFETY, WRITE_SECONDS, DeadlineLoader, TimeBudget
from easycls.engine.hooks.base import Hook
from easycls.engine.hooks.budget import BudgetHook
from easycls.optim.schedulers import SHAPES, create_time_scheduler


class FakeClock:
    """A clock the test moves: ``Tick`` advances it as if batches and validations took time."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Tick(Hook):
    """Each training batch costs ``batch`` seconds of the fake clock, each validation ``val``."""

    priority = 0

    def __init__(self, clock: FakeClock, batch: float, val: float):
        self.clock, self.batch, self.val = clock, batch, val

    def after_train_iter(self, runner, batch_idx, batch, outputs) -> None:
        self.clock.now += self.batch

    def before_val_epoch(self, runner) -> None:
        self.clock.now += self.val


def sgd(lr=1.0):
    return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr)


# ----------------------------------------------------------------------------- durations and the clock
@pytest.mark.parametrize("value,seconds", [(90, 90.0), (0, 0.0), (2.5, 2.5), ("90s", 90.0), ("90", 90.0),
                                           ("10m", 600.0), ("1.5h", 5400.0), (" 2 M ", 120.0), (".5h", 1800.0)])
def test_durations_parse_to_seconds(value, seconds):
    assert parse_duration(value) == seconds
    assert make_config(None, {"time_budget": value})["time_budget"] == value


@pytest.mark.parametrize("value", [-1, "10d", "ten", "", True, None, float("nan"), "1h30m"])
def test_a_bad_duration_names_the_key_and_the_forms(value):
    with pytest.raises(ConfigError, match=r"bad value for 'time_budget'.*'90s', '10m' or '1.5h'"):
        make_config(None, {"time_budget": value})


def test_durations_read_back_for_people():
    assert [format_duration(s) for s in (0, 45.4, 185, 3725)] == ["0s", "45s", "3m05s", "1h02m"]


def test_the_clock_counts_from_the_process_start():
    code = ("import time; time.sleep(0.6); from easycls.core.clock import process_start; "
            "print(time.monotonic() - process_start())")
    begin = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    running = float(out.stdout)
    assert 0.6 <= running <= time.monotonic() - begin + 0.05  # the sleep and the start-up, not only the import
    assert process_start() < time.monotonic()


def test_the_command_line_hands_its_process_start_to_the_api(monkeypatch, tmp_path):
    from easycls.cli import train as cli_train
    seen = {}

    def fake_train(config, **kwargs):
        seen.update(kwargs)
        return easycls.TrainResult(str(tmp_path), None, "val_acc", None, 0, pd.DataFrame(), {})
    monkeypatch.setattr(cli_train.api, "train", fake_train)
    assert cli_train.train(None, {}) == 0
    assert seen["started"] == pytest.approx(process_start(), abs=0.05)


# ----------------------------------------------------------------------------- the schedule over time
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_starts_at_the_rate_and_ends_at_its_floor(shape):
    opt = sgd()
    sched = create_time_scheduler(shape, opt, warmup=0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(sched.factor(0.0))
    sched.set_progress(1.0)
    floor = {"cosine": 0.0, "linear": 0.0, "onecycle": 1 / 25e4, "constant": 1.0}[shape]
    assert opt.param_groups[0]["lr"] == pytest.approx(floor, abs=1e-12)


def test_cosine_and_one_cycle_over_time_follow_torch():
    steps = 1000  # torch's one-cycle ends its ramp at step pct_start * steps - 1, where ours is continuous
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt := sgd(), T_max=steps)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(opt2 := sgd(), max_lr=1.0, total_steps=steps)
    ours_cos, ours_one = create_time_scheduler("cosine", sgd()), create_time_scheduler("onecycle", sgd())
    for i in range(steps):
        assert ours_cos.factor(i / steps) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9)
        assert ours_one.factor(i / (steps - 1)) == pytest.approx(opt2.param_groups[0]["lr"], abs=3e-3)
        for optimizer, scheduler in ((opt, cosine), (opt2, one_cycle)):
            optimizer.step()
            scheduler.step()


def test_warm_up_is_a_share_of_the_run():
    sched = create_time_scheduler("linear", sgd(), warmup=0.2)
    assert sched.factor(0.0) == pytest.approx(0.01)  # WARMUP_START, not 0: the first batch trains
    assert sched.factor(0.1) == pytest.approx(0.505)
    assert sched.factor(0.2) == pytest.approx(1.0)
    assert sched.factor(0.6) == pytest.approx(0.5)  # the shape over what is left after the warm-up
    assert create_time_scheduler("onecycle", sgd(), warmup=0.2).warmup == 0.0  # it has its own ramp


def test_a_checkpoint_resumes_only_with_its_kind_of_schedule():
    from easycls.core.errors import CheckpointError
    from easycls.optim.schedulers import create_scheduler
    by_time, by_epoch = create_time_scheduler("cosine", sgd()), create_scheduler("cosine", sgd(), epochs=5)
    with pytest.raises(CheckpointError, match="trained without a time_budget; resume it without one"):
        by_time.load_state_dict(by_epoch.state_dict())
    with pytest.raises(CheckpointError, match="trained with a time_budget; resume it with one"):
        by_epoch.load_state_dict(by_time.state_dict())


def test_a_scheduler_planned_in_epochs_is_refused_with_a_budget(tiny_data, tmp_path):
    cfg = make_config(tiny_cfg(tiny_data, tmp_path / "o", time_budget="1m", scheduler="step-4-0.8"))
    with pytest.raises(ConfigError, match=r"'step-4-0.8' is planned in epochs; with time_budget use one of "
                                          r"'cosine', 'linear', 'onecycle', 'constant'"):
        builder.preflight(cfg)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra,message", [
    (dict(model_name="auto"), "model_name='auto' picks the model that fits a time budget"),
    (dict(model_name="auto", time_budget=60, pretrained=True), "trains its candidates from scratch"),
    (dict(time_budget=60, val_path=""), "with val_path='' \\(k-fold\\) train one fold a run"),
])
def test_what_a_budget_cannot_do_fails_before_anything_is_read(tiny_data, tmp_path, extra, message):
    cfg = make_config(tiny_cfg(tiny_data, tmp_path / "o", **extra))
    with pytest.raises(ConfigError, match=message):
        builder.preflight(cfg)


# ----------------------------------------------------------------------------- the budget's arithmetic
def test_progress_is_the_share_of_training_time_or_of_batches_whichever_is_further():
    clock = FakeClock(10.0)
    budget = TimeBudget(100.0, started=0.0, clock=clock)
    budget.record("val", 2.5)
    budget.record("writes", 1.5)
    budget.record("writes", 1.0)  # the slowest measured counts
    reserve = (2.5 + 1.5) * TAIL_SAFETY + 1.5 + EXIT_SECONDS + MARGIN * 100
    assert budget.training_end() == pytest.approx(100 - reserve)
    budget.start(done=0, total=1000)
    clock.now = 10 + (budget.training_end() - 10) / 2
    assert budget.progress() == pytest.approx(0.5)
    budget.done = 800  # the epochs run out first
    assert budget.progress() == pytest.approx(0.8)
    budget.done = 0
    assert budget.progress() == pytest.approx(0.8)  # never goes back
    assert not budget.over() and budget.over(ahead=budget.training_end())


def test_a_new_measurement_replans_the_rest_without_a_jump():
    clock = FakeClock(0.0)
    budget = TimeBudget(100.0, started=0.0, clock=clock)
    budget.start(done=0, total=10 ** 6)
    clock.now = budget.training_end() / 2
    assert budget.progress() == pytest.approx(0.5)
    budget.record("val", 10.0)  # validation is slower than estimated: training must end 11.5 s sooner
    assert budget.progress() == pytest.approx(0.5)  # the rate goes on from where it was
    half_way = clock.now + (budget.training_end() - clock.now) / 2
    clock.now = half_way
    assert budget.progress() == pytest.approx(0.75)
    clock.now = budget.training_end()
    assert budget.progress() == pytest.approx(1.0)


def test_a_resumed_run_continues_the_schedule_over_its_new_budget():
    before = TimeBudget(50.0, started=0.0, clock=FakeClock(0.0))
    before.reached = 0.6
    saved = BudgetHook(before).state_dict()  # in last.pth
    clock = FakeClock(0.0)
    budget = TimeBudget(50.0, started=0.0, clock=clock)
    budget.start(done=0, total=10 ** 6)
    BudgetHook(budget).load_state_dict(saved)
    assert budget.progress() == pytest.approx(0.6)
    clock.now = budget.training_end() / 2
    assert budget.progress() == pytest.approx(0.8)


def test_under_torchrun_one_late_rank_stops_them_all(monkeypatch):
    budget = TimeBudget(100.0, started=0.0, dist=DistInfo(rank=0, world=2), clock=FakeClock(1.0))
    budget.start(done=0, total=100)
    monkeypatch.setattr(budget_module, "all_reduce_sum", lambda t, info: t + 1)  # the other rank is late
    assert budget.over()
    loader = DeadlineLoader(list(range(20)), budget)
    assert list(loader) == [] and loader.cut == 0  # checked at batch 0, then every SYNC_EVERY batches


def test_the_loader_ends_the_epoch_before_the_batch_that_would_not_finish():
    clock = FakeClock(0.0)
    budget = TimeBudget(20.0, started=0.0, clock=clock)
    budget.start(done=0, total=10 ** 6)
    served = []
    for batch in DeadlineLoader(list(range(100)), budget):
        budget.tick()
        served.append(batch)
        clock.now += 1.0
    end = budget.training_end()
    assert len(served) == math.floor(end)  # batch k runs from k to k+1 s: the last one ends by the training end
    assert clock.now <= end


# ----------------------------------------------------------------------------- a run against a fake clock
def budget_run(tiny_data, tmp_path, seconds, batch, val, now=5.0, **extra):
    """Train tiny data with BudgetHook and DeadlineLoader, a batch costing ``batch`` and a validation ``val`` fake
    seconds, the budget's clock having started at 0 and training at ``now``."""
    cfg = {**defaults(), **tiny_cfg(tiny_data, tmp_path / "o", scheduler="cosine", time_budget=seconds, **extra)}
    clock = FakeClock(now)
    budget = TimeBudget(seconds, started=0.0, clock=clock)
    train_loader, val_loader, classes = builder.build_train_loaders(cfg, DistInfo())
    model, meta = builder.build_model(cfg)
    meta.class_names = classes
    runner = builder.build_runner(cfg, model, meta, device=torch.device("cpu"), budget=budget,
                                  hooks=builder.build_hooks(cfg, budget) + [Tick(clock, batch, val)])
    summary = runner.train(DeadlineLoader(train_loader, budget), val_loader)
    return runner, budget, summary, pd.read_csv(tmp_path / "o" / "results.csv")


def test_the_deadline_cuts_the_last_epoch_with_the_rate_at_its_floor(tiny_data, tmp_path):
    # 48 images, batch 4: 12 batches of 0.5 s an epoch, validation 1 s (the writes take no fake time), training
    # from 3 s to about 20 s: the third epoch's training would end at 23 s
    runner, budget, summary, frame = budget_run(tiny_data, tmp_path, 21.8, batch=0.5, val=1.0, now=3.0, epochs=50,
                                                batch_size=4, budget_warmup=0.1)
    assert len(frame) == 3 and summary["epochs_run"] == 3
    assert 0 < budget.done - 24 < 12  # the third epoch was cut mid-way by the deadline
    assert budget.now() <= budget.training_end() + 1.0  # + the last validation
    assert frame["lr_end"].iloc[-1] < 0.01 * 0.01  # < 1% of the peak (0.01): annealed when the deadline came
    assert frame["lr"].iloc[0] == pytest.approx(0.01 * 0.01)  # warm-up from 1% of the rate
    assert frame["elapsed"].is_monotonic_increasing and frame["elapsed"].iloc[-1] <= 21.8
    out = tmp_path / "o"
    assert (out / "best.pth").is_file() and (out / "last.pth").is_file() and (out / "lr.png").is_file()
    last = torch.load(out / "last.pth", weights_only=True)
    assert last["hooks"]["BudgetHook"]["progress"] > 0.95


def test_the_epochs_end_the_run_first_with_the_rate_annealed_by_then(tiny_data, tmp_path):
    runner, budget, summary, frame = budget_run(tiny_data, tmp_path, 3600.0, batch=0.5, val=1.0, epochs=3,
                                                batch_size=16)
    assert len(frame) == 3  # epochs is the upper bound
    assert frame["lr_end"].iloc[-1] == pytest.approx(0.01 * runner.scheduler.factor(8 / 9))  # the last of 9 batches
    assert frame["elapsed"].iloc[-1] < 60


class Plateau(Hook):
    """val_acc stays at 0.5 whatever the model does: patience runs out."""

    priority = 35  # before EarlyStopHook reads it

    def after_val_epoch(self, runner, metrics) -> None:
        metrics["val_acc"] = 0.5


def test_an_early_stop_under_a_budget_anneals_over_one_more_epoch_first(tiny_data, tmp_path, easycls_log):
    # 48 images, batch 4: 12 batches an epoch; patience 1 runs out after epoch 2, then epoch 3 anneals
    cfg = {**defaults(), **tiny_cfg(tiny_data, tmp_path / "o", scheduler="cosine", time_budget=3600, epochs=50,
                                    batch_size=4, early_stop_patience=1, budget_warmup=0)}
    clock = FakeClock(5.0)
    budget = TimeBudget(3600, started=0.0, clock=clock)
    train_loader, val_loader, classes = builder.build_train_loaders(cfg, DistInfo())
    model, meta = builder.build_model(cfg)
    meta.class_names = classes
    runner = builder.build_runner(cfg, model, meta, device=torch.device("cpu"), budget=budget,
                                  hooks=builder.build_hooks(cfg, budget) + [Tick(clock, 0.5, 1.0), Plateau()])
    runner.train(DeadlineLoader(train_loader, budget), val_loader)
    frame = pd.read_csv(tmp_path / "o" / "results.csv")
    assert len(frame) == 3 and budget.done == 36
    start = budget._batch_anchor[1]  # the progress when patience ran out: the 24th of 600 batches had started
    assert 23 / 600 <= start < 0.05
    assert frame["lr"].iloc[2] == pytest.approx(0.01 * runner.scheduler.factor(start))  # no jump
    assert frame["lr_end"].iloc[2] == pytest.approx(0.01 * runner.scheduler.factor(start + (1 - start) * 11 / 12))
    assert frame["lr_end"].iloc[2] < 0.02 * 0.01 < frame["lr_end"].iloc[1]
    assert any("early stop comes after one more epoch" in line for line in easycls_log)
    assert torch.load(tmp_path / "o" / "last.pth", weights_only=True)["stopped"]


def test_the_run_stops_between_epochs_when_the_next_would_train_no_batch(tiny_data, tmp_path):
    # validation costs more than what is left after epoch 1: that epoch ends the run
    runner, budget, summary, frame = budget_run(tiny_data, tmp_path, 14.0, batch=2.0, val=3.0, now=1.0, epochs=9,
                                                batch_size=16)
    assert len(frame) == 1 and runner.stop_training


def _rank(rank: int, port: int, data: str, out: str) -> None:
    """One of two gloo ranks of a budget run on fake clocks; rank 1's batches take longer, so it is late first.
    The ranks agree every 2 batches (6 a rank an epoch): rank 1 alone would cut its fourth epoch after 2."""
    import os
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    budget_module.SYNC_EVERY = 2
    dist = DistInfo(rank, 2)
    cfg = {**defaults(), **tiny_cfg(pathlib.Path(data), out, scheduler="cosine", time_budget=14, epochs=50,
                                    batch_size=4)}
    clock = FakeClock(3.0)
    budget = TimeBudget(14.0, started=0.0, dist=dist, clock=clock)
    train_loader, val_loader, classes = builder.build_train_loaders(cfg, dist)
    model, meta = builder.build_model(cfg)
    meta.class_names = classes
    runner = builder.build_runner(cfg, model, meta, dist, torch.device("cpu"), budget=budget,
                                  hooks=builder.build_hooks(cfg, budget) + [Tick(clock, 0.2 + 0.1 * rank, 1.0)])
    runner.train(DeadlineLoader(train_loader, budget), val_loader)
    pathlib.Path(out, f"rank{rank}.json").write_text(json.dumps({"done": budget.done, "epochs": len(runner.history),
                                                                 "clock": clock.now}))
    torch.distributed.destroy_process_group()


def test_two_ranks_on_different_clocks_stop_at_the_same_batch(tiny_data, tmp_path):
    import multiprocessing
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    ranks = [context.Process(target=_rank, args=(r, port, str(tiny_data), str(tmp_path / "o"))) for r in (0, 1)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=600)
    assert [p.exitcode for p in ranks] == [0, 0]  # no rank left waiting in a collective the other skipped
    seen = [json.loads((tmp_path / "o" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0]["done"] == seen[1]["done"] == 20 and seen[0]["epochs"] == seen[1]["epochs"] == 4
    assert seen[1]["clock"] <= 14.0  # the late rank's own deadline held
    assert len(pd.read_csv(tmp_path / "o" / "results.csv")) == seen[0]["epochs"]


def test_the_progress_bar_shows_the_time_left():
    hook = BudgetHook(TimeBudget(600.0, started=0.0, clock=FakeClock(125.0)))
    assert hook.status() == {"left": "7m55s"}


# ----------------------------------------------------------------------------- the probe and 'auto'
def fake_probes(monkeypatch, speeds):
    """``probe_model`` returning the given images per second and parameters, without training anything."""
    def fake(cfg, name, loader, device):
        ips, params = speeds[name]
        return probe.Probe(name, params, ips, 0.1)
    monkeypatch.setattr(probe, "probe_model", fake)


def test_auto_picks_the_largest_candidate_with_enough_passes(monkeypatch):
    speeds = {"small": (4000.0, 1e6), "mid": (1000.0, 5e6), "big": (300.0, 11e6)}
    fake_probes(monkeypatch, speeds)
    monkeypatch.setattr(probe, "AUTO_CANDIDATES", tuple(speeds))
    budget = TimeBudget(120.0, started=0.0, clock=FakeClock(10.0))
    cfg = {**defaults(), "model_name": "auto", "time_budget": 120, "batch_size": 100}
    chosen, record = probe.fit_to_budget(cfg, budget, [None] * 100, 1000, torch.device("cpu"))
    # 10,000 images: small 2.5 s an epoch, mid 10 s (about 10 passes in ~105 s), big 33 s (about 3 passes)
    assert chosen["model_name"] == "mid" and record["chosen"] == "mid"
    assert [round(p["passes"]) for p in record["probes"]] == [30, 10, 3]
    assert "largest candidate (by parameters)" in record["rule"]


def test_auto_takes_the_most_passes_when_no_candidate_gets_enough(monkeypatch):
    speeds = {"small": (400.0, 1e6), "big": (100.0, 11e6)}
    fake_probes(monkeypatch, speeds)
    monkeypatch.setattr(probe, "AUTO_CANDIDATES", tuple(speeds))
    budget = TimeBudget(120.0, started=0.0, clock=FakeClock(10.0))
    cfg = {**defaults(), "model_name": "auto", "time_budget": 120, "batch_size": 100}
    chosen, record = probe.fit_to_budget(cfg, budget, [None] * 100, 1000, torch.device("cpu"))
    assert chosen["model_name"] == "small"


def test_a_budget_too_small_for_one_pass_says_the_smallest_that_fits(monkeypatch):
    fake_probes(monkeypatch, {"resnet10t": (100.0, 5e6)})
    budget = TimeBudget(60.0, started=0.0, clock=FakeClock(12.0))
    cfg = {**defaults(), "time_budget": "1m", "batch_size": 100}
    with pytest.raises(ConfigError) as error:
        probe.fit_to_budget(cfg, budget, [None] * 100, 1000, torch.device("cpu"))
    # 12 s so far + a 100 s epoch + its validation and writes (1000 / 300 img/s + 1 s) x 1.15 + the last writes
    needed = (12 + 100 + (1000 / 300 + WRITE_SECONDS) * TAIL_SAFETY + WRITE_SECONDS + EXIT_SECONDS) / (1 - MARGIN)
    assert str(error.value).startswith("time_budget='1m' (60 s) is too small for one pass over the data")
    assert f"about {format_duration(needed + 0.5)}" in str(error.value) and "\n" not in str(error.value)


def test_the_probe_measures_a_real_model_and_leaves_the_seeds_alone(tiny_data, tmp_path):
    cfg = {**defaults(), **tiny_cfg(tiny_data, tmp_path / "o")}
    train_loader, _, _ = builder.build_train_loaders(cfg, DistInfo())
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    result = probe.probe_model(cfg, "test_resnet", train_loader, torch.device("cpu"))
    assert torch.rand(1) == expected
    assert result.images_per_second > 0 and result.parameters > 0 and result.probe_seconds > 0


# ----------------------------------------------------------------------------- the whole run
def test_a_budget_run_writes_the_time_columns_lr_png_and_the_probe(tiny_data, tmp_path):
    out = tmp_path / "o"
    result = easycls.train(tiny_cfg(tiny_data, out, epochs=2, scheduler="linear", time_budget="20m"))
    assert result.epochs_run == 2 and set(result.history) >= {"elapsed", "lr_end"}
    assert result.history["lr_end"].iloc[-1] < 0.01 * 0.2  # linear: 5 of 6 batches done
    assert "lr.png" in result.files and (out / "best.pth").is_file() and (out / "last.pth").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["model_probe"]["chosen"] == "test_resnet" and config["model_probe"]["probes"][0]["passes"] > 1
    report = (out / "report.html").read_text()
    assert "Time budget 20m" in report and 'alt="learning rate against time"' in report


def test_a_budget_too_small_fails_before_any_file_is_written(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="too small for one pass over the data.*smallest budget that fits"):
        easycls.train(tiny_cfg(tiny_data, tmp_path / "o", time_budget=0.5))
    assert not (tmp_path / "o").exists()


def test_auto_trains_the_chosen_candidate_and_says_why(tiny_data, tmp_path, monkeypatch, easycls_log):
    monkeypatch.setattr(probe, "AUTO_CANDIDATES", ("test_resnet", "test_efficientnet"))
    result = easycls.train(tiny_cfg(tiny_data, tmp_path / "o", model_name="auto", time_budget="20m", epochs=1))
    chosen = json.loads((tmp_path / "o" / "config.json").read_text())["model_probe"]["chosen"]
    assert chosen in ("test_resnet", "test_efficientnet")
    assert torch.load(result.files["best.pth"], weights_only=True)["meta"]["model_name"] == chosen
    text = "\n".join(easycls_log)
    assert f"chose {chosen}" in text and "img/s" in text
