"""Checkpoint files: atomic writes, damaged files, no code execution, safetensors."""
import json
import os

import pytest
import torch
from conftest import cfg_overrides, resumable_cfg, run_script

from easycls.cli.inference import evaluate_main, predict_main
from easycls.cli.train import train_main
from easycls.core.checkpoints import atomic_write, load_checkpoint, save_checkpoint
from easycls.core.errors import CheckpointError


# ----------------------------------------------------------------------------- checkpoint files
def test_crash_or_full_disk_during_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth")
    save_checkpoint({"w": torch.ones(3)}, path)

    def crash(tmp):
        open(tmp, "wb").write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match="could not write .*last.pth: No space left on device; the previous"):
        atomic_write(path, crash)
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pth"]  # no temp file left behind


def test_truncated_last_pth_is_a_one_line_error(tiny_data, tmp_path):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    last = tmp_path / "o" / "last.pth"
    last.write_bytes(last.read_bytes()[:1000])
    result = run_script("train.py", *cfg_overrides({**cfg, "epochs": 2, "resume": True}))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and f"{last} is damaged or truncated" in result.stderr


# ----------------------------------------------------------------------------- security
class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_code_in_a_checkpoint_never_runs(tiny_data, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil(str(marker))}, evil)
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=1)
    calls = [(train_main, {"pretrained": str(evil)}), (train_main, {"resume": str(evil)}),
             (evaluate_main, {"model_path": str(evil), "eval_path": str(tiny_data / "test")}),
             (predict_main, {"model_path": str(evil)})]
    for command, extra in calls:
        capsys.readouterr()
        assert command(cfg_overrides({**cfg, **extra})) == 2
        assert f"refusing to load {evil}" in capsys.readouterr().err
    assert not marker.exists()


def test_safetensors_pair_evaluates_like_the_pth(tiny_data, tmp_path):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=2)
    assert train_main(cfg_overrides(cfg)) == 0
    results = []
    for name in ("best.pth", "best.safetensors"):
        extra = {"model_path": str(tmp_path / "o" / name), "eval_path": str(tiny_data / "test")}
        assert evaluate_main(cfg_overrides({**cfg, **extra})) == 0
        results.append(json.load(open(tmp_path / "o" / "eval" / "metrics.json")))
    for result in results:
        result.pop("seconds"), result.pop("model_path")  # evaluation time and the file: the fields that differ
    assert results[0] == results[1]
    assert json.load(open(tmp_path / "o" / "best.json"))["class_names"] == ["left", "middle", "right"]
