"""torchrun on CPU with gloo, launched the way a user launches it."""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import ROOT, cfg_overrides, run_script, tiny_cfg

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")


def torchrun(*args, timeout=240):
    launcher = shutil.which("torchrun")
    command = [launcher] if launcher else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command + ["--standalone", "--nproc_per_node=2", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny training run with 1 process and with 2 processes."""
    from conftest import make_tiny_data
    root = tmp_path_factory.mktemp("ddp")
    data = make_tiny_data(root)
    cfg = tiny_cfg(data, root / "single", epochs=4, save_best_only=False, augment="light")
    single = run_script("train.py", *cfg_overrides(cfg))
    assert single.returncode == 0, single.stderr
    ddp_cfg = {**cfg, "save_dir": str(root / "ddp"), "batch_size": 4, "accumulate_steps": 2, "sync_bn": True}
    ddp = torchrun(os.path.join(ROOT, "train.py"), *cfg_overrides(ddp_cfg))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return cfg, ddp_cfg, single, ddp, data


def test_two_processes_train_with_one_set_of_outputs(runs):
    cfg, ddp_cfg, single, ddp, _ = runs
    out = ddp_cfg["save_dir"]
    assert "x2 processes" in ddp.stdout
    assert "effective batch size 16 (4 per process x 2 x 2 accumulated)" in ddp.stdout  # no_sync on odd batches
    assert ddp.stdout.count("sync_bn=True needs CUDA") == 1  # reported once, by rank 0, and training goes on
    assert ddp.stdout.count("best epoch") == 1  # rank 0 alone reports and writes
    results = pd.read_csv(os.path.join(out, "results.csv"))
    assert results["epoch"].tolist() == [1, 2, 3, 4]
    assert sorted(n for n in os.listdir(out) if n.endswith(".pth")) == \
        ["best.pth", "epoch_001.pth", "epoch_002.pth", "epoch_003.pth", "epoch_004.pth", "last.pth"]
    single_acc = pd.read_csv(os.path.join(cfg["save_dir"], "results.csv"))["val_acc"].max()
    assert results["val_acc"].max() >= min(0.9, single_acc - 0.1)


def test_checkpoint_is_unwrapped_and_loads_in_plain_evaluate(runs, tmp_path):
    _, ddp_cfg, _, _, data = runs
    state = torch.load(os.path.join(ddp_cfg["save_dir"], "best.pth"), weights_only=True)
    assert not any(k.startswith("module.") for k in state["model"])
    result = run_script("evaluate.py", *cfg_overrides({**ddp_cfg, "eval_path": str(data / "test")}))
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout


def test_resume_under_torchrun(runs):
    _, ddp_cfg, _, _, _ = runs
    result = torchrun(os.path.join(ROOT, "train.py"), *cfg_overrides({**ddp_cfg, "epochs": 5, "resume": True}))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at epoch 5" in result.stdout
    assert pd.read_csv(os.path.join(ddp_cfg["save_dir"], "results.csv"))["epoch"].tolist() == [1, 2, 3, 4, 5]


def test_a_crashing_rank_fails_the_job_instead_of_hanging(runs, tmp_path):
    _, ddp_cfg, _, _, _ = runs
    config = tmp_path / "crash.py"
    config.write_text(
        "from easycls import Hook\n\n\n"
        "class CrashOnRank1(Hook):\n"
        "    def before_val_epoch(self, runner):\n"
        "        if runner.dist.rank == 1:\n"
        "            raise RuntimeError('rank 1 crashed on purpose')\n\n\n"
        f"cfg = {{**{ddp_cfg!r}, 'save_dir': {str(tmp_path / 'o')!r}, 'custom_hooks': [CrashOnRank1()]}}\n")
    result = torchrun(os.path.join(ROOT, "train.py"), "--config", str(config), timeout=180)
    assert result.returncode != 0
    assert "rank 1 crashed on purpose" in result.stderr
