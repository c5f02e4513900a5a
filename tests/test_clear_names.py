"""Clear key names (k_fold, early_stop_patience), with the reference project's spellings (k_flod,
early_stop_patient) still read wherever a config is: files, overrides, dicts and the configs older runs saved."""
import html
import json
import os

import pandas as pd
import pytest
import torch
from conftest import ROOT, tiny_cfg, write_config

from easycls.cli import evaluate_main, train_main
from easycls.config import SCHEMA, defaults, load_config, validate
from easycls.core.errors import ConfigError
from easycls.engine.builder import build_hooks
from easycls.engine.hooks import EarlyStopHook
from easycls.evaluation.report import write_report

OLD = {"k_flod": 3, "early_stop_patient": 2}
CLEAR = {"k_fold": 3, "early_stop_patience": 2}


def _clear(cfg):
    return {key: cfg[key] for key in CLEAR}


def test_the_schema_and_shipped_configs_use_the_clear_names():
    assert set(CLEAR) <= set(SCHEMA) and not set(OLD) & set(SCHEMA)
    with open(os.path.join(ROOT, "config.py")) as shipped:
        text = shipped.read()
    assert all(f"    {key}=" in text for key in CLEAR) and not any(f"    {key}=" in text for key in OLD)


def test_old_spellings_in_a_config_file(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.py", OLD))
    assert _clear(cfg) == CLEAR and not set(OLD) & set(cfg)


def test_old_spellings_as_overrides():
    cfg = load_config(None, [f"{key}={value}" for key, value in OLD.items()])
    assert _clear(cfg) == CLEAR and not set(OLD) & set(cfg)


def test_old_spellings_in_dicts():
    assert _clear(load_config(dict(OLD))) == CLEAR
    assert _clear(load_config(None, dict(OLD))) == CLEAR
    merged = validate({**defaults(), **OLD})  # a saved config of an older run merged over the defaults
    assert _clear(merged) == CLEAR and not set(OLD) & set(merged)


def test_a_child_config_overrides_its_base_across_spellings(tmp_path):
    write_config(tmp_path / "base.py", {"k_flod": 4})
    (tmp_path / "child.py").write_text("_base_ = 'base.py'\ncfg = dict(k_fold=6)\n")
    assert load_config(str(tmp_path / "child.py"))["k_fold"] == 6


def test_both_spellings_with_different_values_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"sets both k_flod=3 and k_fold=4; k_flod is the old spelling of k_fold"):
        load_config(write_config(tmp_path / "c.py", {"k_flod": 3, "k_fold": 4}))
    assert load_config(write_config(tmp_path / "same.py", {"k_flod": 3, "k_fold": 3}))["k_fold"] == 3


def test_errors_use_the_clear_name():
    with pytest.raises(ConfigError, match=r"val_fold=3 must be below k_fold=3"):
        load_config(None, ["k_flod=3", "val_fold=3"])
    with pytest.raises(ConfigError, match=r"bad value for 'early_stop_patience': -1"):
        load_config(None, ["early_stop_patient=-1"])


def test_the_old_patience_spelling_reaches_the_early_stop_hook():
    hooks = build_hooks(load_config(None, ["early_stop_patient=2"]))
    assert [hook.stopper.patience for hook in hooks if isinstance(hook, EarlyStopHook)] == [2]


def _as_older_run(save_dir):
    """Rewrite a run's saved configs with the old spellings, as an older easycls wrote them."""
    cfg_path = save_dir / "config.json"
    saved = json.loads(cfg_path.read_text())
    renamed = {{"k_fold": "k_flod", "early_stop_patience": "early_stop_patient"}.get(k, k): v for k, v in saved.items()}
    cfg_path.write_text(json.dumps(renamed))
    for name in ("last.pth", "best.pth"):
        state = torch.load(save_dir / name, weights_only=True)
        state["config"] = renamed
        torch.save(state, save_dir / name)


def test_a_run_saved_with_the_old_names_resumes_evaluates_and_reports(tiny_data, tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path / "old.py", {**tiny_cfg(tiny_data, out, epochs=1), **OLD})
    assert train_main(["--config", config]) == 0
    assert _clear(json.loads((out / "config.json").read_text())) == CLEAR  # what a run saves now
    _as_older_run(out)
    write_report(str(out))
    page = html.unescape((out / "report.html").read_text())
    assert '"k_fold": 3' in page and '"early_stop_patience": 2' in page and "k_flod" not in page
    assert train_main(["--config", config, "epochs=2", "resume=True"]) == 0
    assert list(pd.read_csv(out / "results.csv")["epoch"]) == [1, 2]
    assert evaluate_main(["--config", config]) == 0
    assert json.loads((out / "eval" / "metrics.json").read_text())["n_images"] == 6 * 3
