"""Resuming: kill -9 and Ctrl-C, finished runs, and changed set-ups refused."""
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import ROOT, cfg_overrides, resumable_cfg, run_script, wait_for_rows

from easycls.cli.train import train_main


def tensors(state, prefix=""):
    """Every tensor in a nested checkpoint dict, by its path of keys."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


# ----------------------------------------------------------------------------- resume
EMA_ACCUMULATE = {"ema": True, "ema_decay": 0.9, "accumulate_steps": 2}


# The second set draws from Python's and NumPy's generators too (timm's RandomErasing and Mixup).
@pytest.mark.parametrize("extra", [EMA_ACCUMULATE, {**EMA_ACCUMULATE, "mixup": True, "cutmix": True,
                                                    "augment": "trivialaugment", "random_erasing": 0.5}],
                         ids=["ema-accumulate", "mixing-erasing"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_data, tmp_path, extra):
    full = {**resumable_cfg(tiny_data, tmp_path / "full"), **extra}
    assert run_script("train.py", *cfg_overrides(full)).returncode == 0
    killed = {**full, "save_dir": str(tmp_path / "killed")}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *cfg_overrides(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_rows(tmp_path / "killed" / "results.csv", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before_kill = torch.load(tmp_path / "killed" / "last.pth", weights_only=True)["epoch"] + 1
    assert done_before_kill < killed["epochs"]
    result = run_script("train.py", *cfg_overrides({**killed, "resume": True}))
    assert result.returncode == 0, result.stderr
    assert f"resumed from {tmp_path / 'killed' / 'last.pth'} at epoch {done_before_kill + 1}" in result.stdout
    a = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "killed" / "last.pth", weights_only=True)
    ta, tb = tensors(a), tensors(b)
    assert set(ta) == set(tb) and {"/model/conv1.0.weight", "/eval_model/conv1.0.weight", "/rng/torch"} <= set(ta)
    assert [k for k in ta if not torch.equal(ta[k], tb[k])] == []
    assert a["hooks"] == b["hooks"] and a["optimizer_steps"] == b["optimizer_steps"] == 8 * 2
    assert [r["lr"] for r in a["history"]] == [r["lr"] for r in b["history"]]
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]
    assert pd.read_csv(tmp_path / "killed" / "results.csv")["epoch"].tolist() == list(range(1, 9))


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


def test_ctrl_c_saves_interrupted_checkpoint_and_resumes(tiny_data, tmp_path):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=40)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *cfg_overrides(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path / "o" / "results.csv", 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted during epoch" in out and os.path.exists(tmp_path / "o" / "interrupted.pth")
    state = torch.load(tmp_path / "o" / "interrupted.pth", weights_only=True)
    assert state["interrupted"] and state["epoch"] + 1 == len(state["history"])
    result = run_script("train.py", *cfg_overrides({**cfg, "epochs": state["epoch"] + 3, "resume": True}))
    assert result.returncode == 0, result.stderr
    assert "interrupted.pth" in result.stdout and not os.path.exists(tmp_path / "o" / "interrupted.pth")
