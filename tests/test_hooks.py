"""Hooks as a user meets them: config files with _base_ and their own Hook, the registry, state across resume."""
import json
import os
import sys

import pandas as pd
import pytest
import torch
from conftest import cfg_overrides, tiny_cfg

from easycls import Hook, list_hooks, register_hook
from easycls.cli.train import train_main
from easycls.config.loading import load_config
from easycls.core.errors import ConfigError
from easycls.engine.hooks.base import HOOKS, build_hook

USER_CONFIG = '''
import json
from easycls import Hook

_base_ = "base.py"


class EventLog(Hook):
    """Writes every event it sees, and a few values from runner.cfg, to a JSON-lines file."""

    def __init__(self, path):
        self.path, self.epochs_seen = path, 0

    def _write(self, event, runner):
        with open(self.path, "a") as handle:
            handle.write(json.dumps([event, runner.epoch, runner.cfg["epochs"], runner.cfg["learning_rate"],
                                     self.epochs_seen]) + "\\n")

    def before_run(self, runner): self._write("before_run", runner)
    def before_train_epoch(self, runner): self._write("before_train_epoch", runner)
    def before_train_iter(self, runner, batch_idx, batch): self._write("before_train_iter", runner)
    def after_train_iter(self, runner, batch_idx, batch, outputs): self._write("after_train_iter", runner)
    def after_train_epoch(self, runner): self._write("after_train_epoch", runner)
    def before_val_epoch(self, runner): self._write("before_val_epoch", runner)
    def after_val_epoch(self, runner, metrics):
        self.epochs_seen += 1
        self._write("after_val_epoch", runner)
    def after_run(self, runner): self._write("after_run", runner)
    def state_dict(self): return {"epochs_seen": self.epochs_seen}
    def load_state_dict(self, state): self.epochs_seen = state["epochs_seen"]


cfg = dict(epochs=EPOCHS, custom_hooks=[EventLog(LOG)])
'''


def write_user_configs(tmp_path, data, epochs, log):
    base = tiny_cfg(data, tmp_path / "out", learning_rate=0.005, batch_size=16, epochs=1)
    (tmp_path / "base.py").write_text("cfg = " + repr(base) + "\n")
    user = tmp_path / "my.py"
    user.write_text(USER_CONFIG.replace("EPOCHS", str(epochs)).replace("LOG", repr(str(log))))
    return str(user)


def read_events(log):
    return [json.loads(line) for line in open(log)]


def test_a_user_hook_in_a_config_with_a_base_sees_every_event(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "events.jsonl"
    config = write_user_configs(tmp_path, tiny_data, 2, log)
    assert train_main(["--config", config]) == 0
    events = read_events(log)
    names = [e[0] for e in events]
    assert names[0] == "before_run" and names[-1] == "after_run"
    assert names.count("before_run") == names.count("after_run") == 1
    for event in ("before_train_epoch", "after_train_epoch", "before_val_epoch", "after_val_epoch"):
        assert names.count(event) == 2, event
    assert names.count("before_train_iter") == names.count("after_train_iter") == 2 * 3  # 48 images / 16
    assert {(e[2], e[3]) for e in events} == {(2, 0.005)}  # epochs from the child, learning_rate from the base
    assert json.load(open(tmp_path / "out" / "config.json"))["custom_hooks"] == ["EventLog"]


def test_hook_state_is_saved_in_last_pth_and_restored_on_resume(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "events.jsonl"
    config = write_user_configs(tmp_path, tiny_data, 2, log)
    assert train_main(["--config", config]) == 0
    state = torch.load(tmp_path / "out" / "last.pth", weights_only=True)
    assert state["hooks"]["EventLog"] == {"epochs_seen": 2}
    assert {"CheckpointHook", "EarlyStopHook", "LoggerHook", "ParamSchedulerHook"} <= set(state["hooks"])
    os.remove(log)
    assert train_main(["--config", config, "epochs=3", "resume=True"]) == 0
    after_val = [e for e in read_events(log) if e[0] == "after_val_epoch"]
    assert [(e[1], e[4]) for e in after_val] == [(2, 3)]  # epoch 3 only, counting on from the restored 2


def test_list_hooks_names_the_built_ins():
    assert {"CheckpointHook", "EarlyStopHook", "LoggerHook", "ParamSchedulerHook", "FreezeHook", "EMAHook",
            "TensorBoardHook"} <= set(list_hooks())


def test_unknown_hook_is_one_line_and_leaves_no_folder(tiny_data, tmp_path, capsys):
    cfg = tiny_cfg(tiny_data, tmp_path / "never", custom_hooks=["NoSuchHook"])
    assert train_main(cfg_overrides(cfg)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown hook 'NoSuchHook'" in err and "CheckpointHook" in err
    assert not os.path.exists(tmp_path / "never")


def test_registered_names_and_dicts_build_hooks(tiny_data, tmp_path):
    @register_hook
    class CountIters(Hook):
        count = 0

        def after_train_iter(self, runner, batch_idx, batch, outputs):
            CountIters.count += 1
    try:
        cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=6, early_stop_patience=0,
                       custom_hooks=["CountIters", dict(type="EarlyStopHook", monitor="val_loss", patience=1,
                                                        min_delta=100.0)])  # nothing counts as better
        assert train_main(cfg_overrides(cfg)) == 0
        assert len(pd.read_csv(tmp_path / "o" / "results.csv")) == 2
        assert CountIters.count == 2 * 3
    finally:
        HOOKS.pop("CountIters")
    with pytest.raises(ConfigError, match="unexpected keyword argument 'patience_'"):
        build_hook(dict(type="EarlyStopHook", patience_=1))
    with pytest.raises(TypeError, match="Hook subclass"):
        register_hook(object)


def test_tensorboard_writes_event_files(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=2, tensorboard=True)
    assert train_main(cfg_overrides(cfg)) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "o" / "tensorboard"))
    events.Reload()
    assert {"val/acc", "train/loss", "lr"} <= set(events.Tags()["scalars"])
    assert [s.step for s in events.Scalars("val/acc")] == [1, 2]


def test_tensorboard_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[tensorboard\]"'):
        load_config(None, ["tensorboard=True"])


def test_the_documented_hook_example_runs(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "walkthroughs.md")).read()
    example = next(block for block in page.split("```python\n")[1:] if "class StopAtAccuracy" in block)
    example = example.split("```")[0].replace("StopAtAccuracy(0.995)", "StopAtAccuracy(0.0)")
    (tmp_path / "base.py").write_text("cfg = " + repr(tiny_cfg(tiny_data, tmp_path / "out")) + "\n")
    (tmp_path / "my.py").write_text(example + "\n_base_ = 'base.py'\n")
    assert train_main(["--config", str(tmp_path / "my.py")]) == 0
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == 1  # the target 0.0 is reached at once
    assert torch.load(tmp_path / "out" / "last.pth", weights_only=True)["hooks"]["StopAtAccuracy"] == {"reached": 1}
