"""custom_hooks items with an argument a hook does not take, or a value it refuses: one line naming the hook and
the argument (and what is allowed), before anything is written; never a bare KeyError or TypeError."""
import pytest
from conftest import tiny_cfg

from easycls.cli import train_main
from easycls.config import load_config
from easycls.core.errors import ConfigError
from easycls.engine.hooks import build_hook


@pytest.mark.parametrize("item,message", [
    (dict(type="CheckpointHook", monitor="acc"),
     r"CheckpointHook argument monitor='acc' is not a monitored metric; allowed: val_acc, val_f1, val_loss, val_mAP"),
    (dict(type="EarlyStopHook", monitor="acc"),
     r"EarlyStopHook argument monitor='acc' is not a monitored metric; allowed: val_acc, val_f1, val_loss, val_mAP"),
    (dict(type="CheckpointHook", monitr="val_acc"),
     r"CheckpointHook got an unexpected keyword argument 'monitr'; its arguments: monitor, save_best_only, "
     r"save_one_only"),
    ("FreezeHook", r"FreezeHook missing a required argument: 'epochs'; its arguments: epochs"),
])
def test_a_bad_hook_argument_is_one_config_line(item, message):
    with pytest.raises(ConfigError, match=r"^custom_hooks item .*: " + message + "$") as info:
        build_hook(item)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"custom_hooks": [item]})


@pytest.mark.parametrize("kwargs,named", [(dict(monitor="acc"), "monitor='acc'"),
                                          (dict(monitr="val_acc"), "'monitr'")])
def test_the_train_command_names_the_hook_and_argument_before_writing(tiny_data, tmp_path, capsys, kwargs, named):
    out = tmp_path / "out"
    config = tmp_path / "hooks.py"
    config.write_text(f"cfg = {tiny_cfg(tiny_data, out)!r}\n"
                      f"cfg['custom_hooks'] = [dict(type='CheckpointHook', **{kwargs!r})]\n")
    assert train_main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CheckpointHook" in err and named in err
    assert not out.exists()
