"""Resuming: kill -9 and Ctrl-C, finished runs, changed set-ups refused, and a change of amp."""
import logging
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import ROOT, cfg_overrides, resumable_cfg, wait_for_rows
from run_hooks import config_with_hooks

from easycls.cli.train import train_main
from easycls.config.schema import defaults
from easycls.engine import builder


def tensors(state, prefix=""):
    """Every tensor in a nested checkpoint dict, by its path of keys."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def assert_same_last_checkpoint(full, other, must_have):
    """Every tensor of ``other/last.pth`` equals ``full/last.pth``'s, among them ``must_have``; returns both."""
    a = torch.load(full / "last.pth", weights_only=True)
    b = torch.load(other / "last.pth", weights_only=True)
    ta, tb = tensors(a), tensors(b)
    assert set(ta) == set(tb) and must_have <= set(ta)
    assert [k for k in ta if not torch.equal(ta[k], tb[k])] == []
    return a, b


# ----------------------------------------------------------------------------- resume
EMA_ACCUMULATE = {"ema": True, "ema_decay": 0.9, "accumulate_steps": 2}


# Every generator is drawn from: dropout, augmentation and erasing (torch), Mixup (NumPy), erasing (Python).
MID_EPOCH = {**EMA_ACCUMULATE, "mixup": True, "cutmix": True, "augment": "trivialaugment", "random_erasing": 0.5}


def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_data, tmp_path, capsys):
    """The process killed is the subject: the runs before and after it train in this process."""
    full = {**resumable_cfg(tiny_data, tmp_path / "full", epochs=4), **MID_EPOCH}
    assert train_main(cfg_overrides(full)) == 0
    killed = {**full, "save_dir": str(tmp_path / "killed")}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *cfg_overrides(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_rows(tmp_path / "killed" / "results.csv", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before_kill = torch.load(tmp_path / "killed" / "last.pth", weights_only=True)["epoch"] + 1
    assert done_before_kill < killed["epochs"]
    capsys.readouterr()
    assert train_main(cfg_overrides({**killed, "resume": True})) == 0
    assert f"resumed from {tmp_path / 'killed' / 'last.pth'} at epoch {done_before_kill + 1}" in capsys.readouterr().out
    a, b = assert_same_last_checkpoint(tmp_path / "full", tmp_path / "killed",
                                       {"/model/conv1.0.weight", "/eval_model/conv1.0.weight", "/rng/0/torch"})
    assert a["hooks"] == b["hooks"] and a["optimizer_steps"] == b["optimizer_steps"] == 4 * 2
    assert [r["lr"] for r in a["history"]] == [r["lr"] for r in b["history"]]
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]
    assert pd.read_csv(tmp_path / "killed" / "results.csv")["epoch"].tolist() == list(range(1, 5))


def test_resume_a_finished_run_does_nothing(tiny_data, tmp_path, capsys):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=2)
    assert train_main(cfg_overrides(cfg)) == 0
    before = os.path.getmtime(tmp_path / "o" / "last.pth")
    capsys.readouterr()
    assert train_main(cfg_overrides({**cfg, "resume": True})) == 0
    assert "already finished after epoch 2" in capsys.readouterr().out
    assert os.path.getmtime(tmp_path / "o" / "last.pth") == before


@pytest.mark.parametrize("change,fragment", [
    ({"model_name": "test_efficientnet"}, "model_name: 'test_resnet' -> 'test_efficientnet'"),
    ({"target_img_size": [20, 20]}, "img_size: [16, 16] -> [20, 20]"),
])
def test_resume_with_a_changed_setup_is_refused(tiny_data, tmp_path, capsys, change, fragment):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    capsys.readouterr()
    assert train_main(cfg_overrides({**cfg, **change, "epochs": 3, "resume": True})) == 2
    err = capsys.readouterr().err
    assert "cannot resume from" in err and fragment in err


def test_resume_with_changed_classes_is_refused(tiny_data, tmp_path, capsys):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    os.rename(tiny_data / "train" / "right", tiny_data / "train" / "zright")
    os.rename(tiny_data / "val" / "right", tiny_data / "val" / "zright")
    capsys.readouterr()
    assert train_main(cfg_overrides({**cfg, "epochs": 3, "resume": True})) == 2
    assert "class_names: ['left', 'middle', 'right'] -> ['left', 'middle', 'zright']" in capsys.readouterr().err


def test_ctrl_c_mid_epoch_then_resume_equals_an_uninterrupted_run(tiny_data, tmp_path, capsys):
    """A real SIGINT arrives while batch 3 of epoch 2 trains (a hook holds the run there until it has); training
    stops after batch 4, where the accumulation group ends, and interrupted.pth holds that position. The resumed run
    ends with every tensor equal to an uninterrupted run's."""
    full = {**resumable_cfg(tiny_data, tmp_path / "full", epochs=3), **MID_EPOCH, "batch_size": 8}
    assert train_main(["--config", config_with_hooks(tmp_path / "full.py", full, "[WaitForCtrlC()]")]) == 0
    run, marker = {**full, "save_dir": str(tmp_path / "run")}, tmp_path / "marker"
    config = config_with_hooks(tmp_path / "run.py", run, f"[WaitForCtrlC({str(marker)!r}, epoch=1, batch=2)]")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "--config", config],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted in epoch 2 after batch 4" in out
    state = torch.load(tmp_path / "run" / "interrupted.pth", weights_only=True)
    assert (state["epoch"], state["position"]["epoch"], state["position"]["batch"]) == (0, 1, 4)
    capsys.readouterr()
    resume = config_with_hooks(tmp_path / "resume.py", run, "[WaitForCtrlC()]")
    assert train_main(["--config", resume, "resume=True"]) == 0
    assert "at epoch 2, batch 5" in capsys.readouterr().out and not os.path.exists(tmp_path / "run" / "interrupted.pth")
    a, b = assert_same_last_checkpoint(tmp_path / "full", tmp_path / "run",
                                       {"/model/conv1.0.weight", "/eval_model/conv1.0.weight", "/rng/0/numpy/1"})
    assert a["hooks"] == b["hooks"] and a["optimizer_steps"] == b["optimizer_steps"] == 3 * 3
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in a["history"]] == \
        [{k: v for k, v in row.items() if k != "seconds"} for row in b["history"]]


def test_a_mid_epoch_checkpoint_needs_the_same_batch_size(tiny_data, tmp_path, capsys):
    runner, train_loader, val_loader = make_runner(tiny_data, tmp_path, epochs=2)
    runner.train(train_loader, val_loader)
    state = torch.load(tmp_path / "o" / "last.pth", weights_only=True)
    state["position"] = {"epoch": 1, "batch": 1, "sums": torch.zeros(2), "count": 8, "batch_size": 8, "world": 1,
                         "bad_steps": 0}
    torch.save(state, tmp_path / "o" / "interrupted.pth")
    cfg = {**resumable_cfg(tiny_data, tmp_path / "o", epochs=2), "batch_size": 16, "resume": True}
    assert train_main(cfg_overrides(cfg)) == 2
    assert "batch_size: 8 -> 16 (it stopped in the middle of an epoch)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- amp changed between runs
def make_runner(tiny_data, tmp_path, **extra):
    cfg = {**defaults(), **resumable_cfg(tiny_data, tmp_path / "o"), **extra}
    train_loader, val_loader, classes = builder.build_train_loaders(cfg, builder.DistInfo())
    model, meta = builder.build_model(cfg)
    meta.class_names = classes
    return builder.build_runner(cfg, model, meta, device=torch.device("cpu")), train_loader, val_loader


def fp16_scaler():
    """A GradScaler as amp='fp16' builds on CUDA (the CPU has one too, so that its state can be tested here)."""
    return torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)


@pytest.mark.parametrize("saved_with_scaler", [False, True], ids=["fp32-run-resumed-in-fp16", "fp16-run-in-fp32"])
def test_a_change_of_amp_between_a_run_and_its_resume_works(tiny_data, tmp_path, caplog, monkeypatch,
                                                             saved_with_scaler):
    """A CPU run (no GradScaler state) resumed on a GPU in fp16 starts the loss scale afresh; an fp16 run resumed
    without fp16 drops it. Neither reaches GradScaler.load_state_dict's error for an empty state."""
    first, train_loader, val_loader = make_runner(tiny_data, tmp_path, epochs=1)
    if saved_with_scaler:
        first.stepper.scaler = fp16_scaler()
    first.train(train_loader, val_loader)
    second, train_loader, val_loader = make_runner(tiny_data, tmp_path, epochs=2)
    if not saved_with_scaler:
        second.stepper.scaler = fp16_scaler()
    monkeypatch.setattr(logging.getLogger("easycls"), "propagate", True)  # train_main's set-up turns it off
    with caplog.at_level(logging.INFO, logger="easycls"):
        second.resume(str(tmp_path / "o" / "last.pth"))
    assert ("loss scale starts afresh" if not saved_with_scaler else "its loss scale is dropped") in caplog.text
    assert second.stepper.scaler.state_dict() == ({} if saved_with_scaler else fp16_scaler().state_dict())
    second.train(train_loader, val_loader)
    assert [row["epoch"] for row in second.history] == [1, 2]
