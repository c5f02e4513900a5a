"""torchrun on CPU with gloo, launched the way a user launches it.

One 2-process run is compared with a 1-process run at twice the batch: a model without BatchNorm, no augmentation
and no dropout, so that the two runs must end with the same weights (DDP averages the ranks' gradients; the union
of the ranks' batches is the single run's batch). Both runs get a NaN loss on their last rank at one batch.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import ROOT, make_tiny_data, tiny_cfg, write_images
from run_hooks import config_with_hooks

from easycls.cli import evaluate_main, train_main

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")
TRAIN_PY = os.path.join(ROOT, "train.py")
# test_efficientnet_gn: GroupNorm, no BatchNorm, so a rank's update does not depend on how the batch is split.
SAME_MATH = dict(model_name="test_efficientnet_gn", epochs=2, accumulate_steps=2, optimizer="SGD-0.9",
                 learning_rate=0.003, augment="none", hflip=False, dropout=0.0, ema=True, ema_decay=0.9,
                 calibrate=True, save_best_only=False, early_stop_patient=0)
HOOKS = "[NanLossOnLastRank(0, 1), SaveReplica(), WaitForCtrlC({marker!r})]"


def torchrun_command(*args):
    launcher = shutil.which("torchrun")
    command = [launcher] if launcher else [sys.executable, "-m", "torch.distributed.run"]
    return command + ["--standalone", "--nproc_per_node=2", *args]


def torchrun_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(*args, timeout=240):
    return subprocess.run(torchrun_command(*args), capture_output=True, text=True, timeout=timeout, check=False,
                          env=torchrun_env())


def ddp_config(root, name, cfg, marker=""):
    return config_with_hooks(root / f"{name}.py", {**cfg, "save_dir": str(root / name)}, HOOKS.format(marker=marker))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run with 1 process at batch 8 (in process) and with 2 processes at batch 4 each (torchrun)."""
    root = tmp_path_factory.mktemp("ddp")
    data = make_tiny_data(root)
    for name in sorted(os.listdir(data / "val" / "left"))[:3]:  # wrong labels: calibration has errors to fit on
        os.rename(data / "val" / "left" / name, data / "val" / "middle" / f"x{name}")
    cfg = tiny_cfg(data, root / "single", batch_size=8, **SAME_MATH)
    assert train_main(["--config", ddp_config(root, "single", cfg)]) == 0
    ddp_cfg = {**cfg, "save_dir": str(root / "ddp"), "batch_size": 4, "sync_bn": True}
    ddp = torchrun(TRAIN_PY, "--config", ddp_config(root, "ddp", ddp_cfg))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return root, cfg, ddp_cfg, ddp, data


def load(folder, name="last.pth"):
    return torch.load(os.path.join(folder, name), weights_only=True)


def test_two_processes_equal_one_process_at_twice_the_batch_parameter_by_parameter(runs):
    _, cfg, ddp_cfg, _, _ = runs
    single, ddp = load(cfg["save_dir"]), load(ddp_cfg["save_dir"])
    assert single["optimizer_steps"] == ddp["optimizer_steps"] == 2 * 3 - 1  # the NaN batch's step was skipped
    for part in ("model", "eval_model"):
        assert set(single[part]) == set(ddp[part])
        for key, value in single[part].items():
            assert torch.allclose(value, ddp[part][key], rtol=1e-4, atol=1e-6), \
                (part, key, (value - ddp[part][key]).abs().max())
    assert [r["val_loss"] for r in ddp["history"]] == pytest.approx([r["val_loss"] for r in single["history"]],
                                                                    rel=1e-4)


def test_a_nan_loss_on_one_rank_leaves_both_replicas_identical(runs):
    _, _, ddp_cfg, _, _ = runs
    rank0, rank1 = (load(ddp_cfg["save_dir"], f"replica{r}.pth") for r in (0, 1))
    for part in ("model", "eval_model"):
        assert all(torch.isfinite(v).all() for v in rank0[part].values() if v.is_floating_point())
        assert [k for k in rank0[part] if not torch.equal(rank0[part][k], rank1[part][k])] == []


def test_each_rank_draws_from_its_own_generators_and_the_checkpoint_keeps_every_rank(runs):
    _, _, ddp_cfg, _, _ = runs
    rank0, rank1 = (load(ddp_cfg["save_dir"], f"replica{r}.pth") for r in (0, 1))
    assert not torch.equal(rank0["rng"], rank1["rng"])  # seeded random_seed + rank
    saved = load(ddp_cfg["save_dir"])["rng"]
    assert [torch.equal(s["torch"], r["rng"]) for s, r in zip(saved, (rank0, rank1))] == [True, True]


def test_calibration_fits_the_temperature_on_every_ranks_logits(runs):
    _, cfg, ddp_cfg, _, _ = runs
    single, ddp = load(cfg["save_dir"]), load(ddp_cfg["save_dir"])
    assert single["meta"]["temperature"] != 1.0
    assert ddp["meta"]["temperature"] == pytest.approx(single["meta"]["temperature"], rel=1e-3)
    replicas = [load(ddp_cfg["save_dir"], f"replica{r}.pth")["temperature"] for r in (0, 1)]
    assert replicas[0] == replicas[1]


def test_two_processes_train_with_one_set_of_outputs(runs):
    _, _, ddp_cfg, ddp, _ = runs
    out = ddp_cfg["save_dir"]
    assert "x2 processes" in ddp.stdout
    assert "effective batch size 16 (4 per process x 2 x 2 accumulated)" in ddp.stdout  # no_sync on odd batches
    assert ddp.stdout.count("sync_bn=True needs CUDA") == 1  # reported once, by rank 0, and training goes on
    assert ddp.stdout.count("best epoch") == 1  # rank 0 alone reports and writes
    assert pd.read_csv(os.path.join(out, "results.csv"))["epoch"].tolist() == [1, 2]
    assert sorted(n for n in os.listdir(out) if n.endswith(".pth") and not n.startswith("replica")) == \
        ["best.pth", "epoch_001.pth", "epoch_002.pth", "last.pth"]


def test_checkpoint_is_unwrapped_and_loads_in_plain_evaluate(runs, capsys):
    _, _, ddp_cfg, _, data = runs
    assert not any(k.startswith("module.") for k in load(ddp_cfg["save_dir"], "best.pth")["model"])
    overrides = [f"{k}={ddp_cfg[k]!r}" for k in ("model_name", "class_number", "target_img_size", "channels",
                                                 "save_dir")]
    assert evaluate_main(overrides + [f"eval_path={str(data / 'test')!r}", "GPU_ID='cpu'"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_ctrl_c_mid_epoch_under_torchrun_resumes_every_rank_exactly(runs):
    root, _, ddp_cfg, _, _ = runs
    marker = root / "interrupt.marker"
    config = ddp_config(root, "interrupted", ddp_cfg, str(marker))
    proc = subprocess.Popen(torchrun_command(TRAIN_PY, "--config", config), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=torchrun_env())
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)  # as Ctrl-C in a terminal: torchrun passes it on to every worker
    _, err = proc.communicate(timeout=120)
    state = load(root / "interrupted", "interrupted.pth")
    assert state["position"]["epoch"] == 1 and state["position"]["batch"] == 4, err[-3000:]
    resumed = torchrun(TRAIN_PY, "--config", ddp_config(root, "interrupted", ddp_cfg), "resume=True")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 2, batch 5" in resumed.stdout
    a, b = tensors(load(ddp_cfg["save_dir"])), tensors(load(root / "interrupted"))
    assert set(a) == set(b) and {"/model/conv_stem.weight", "/rng/1/torch"} <= set(a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def tensors(state, prefix=""):
    """Every tensor in a nested checkpoint dict, by its path of keys."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def test_a_batch_unreadable_on_one_rank_does_not_stall_the_others(tmp_path):
    """Streamed at one image per rank, the corrupt file empties one rank's batch: that rank must still take part in
    the gradient all-reduce, or the ranks' collectives pair up wrongly and the job hangs."""
    write_images(str(tmp_path / "train"), per_class=4)
    (tmp_path / "train" / "middle" / "broken.png").write_bytes(b"not an image")
    write_images(str(tmp_path / "val"), per_class=2, seed=1)
    cfg = tiny_cfg(tmp_path, tmp_path / "o", model_name="test_efficientnet_gn", epochs=1, batch_size=1,
                   cache="none", val_path=str(tmp_path / "val"), test_path="")
    result = torchrun(TRAIN_PY, "--config", config_with_hooks(tmp_path / "c.py", cfg, "[SaveReplica()]"),
                      timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "broken.png" in result.stdout + result.stderr
    rank0, rank1 = (load(tmp_path / "o", f"replica{r}.pth")["model"] for r in (0, 1))
    assert [k for k in rank0 if not torch.equal(rank0[k], rank1[k])] == []


def test_a_crashing_rank_fails_the_job_instead_of_hanging(runs, tmp_path):
    _, _, ddp_cfg, _, _ = runs
    config = tmp_path / "crash.py"
    config.write_text(
        "from easycls import Hook\n\n\n"
        "class CrashOnRank1(Hook):\n"
        "    def before_val_epoch(self, runner):\n"
        "        if runner.dist.rank == 1:\n"
        "            raise RuntimeError('rank 1 crashed on purpose')\n\n\n"
        f"cfg = {{**{ddp_cfg!r}, 'save_dir': {str(tmp_path / 'o')!r}, 'custom_hooks': [CrashOnRank1()]}}\n")
    result = torchrun(TRAIN_PY, "--config", str(config), timeout=180)
    assert result.returncode != 0
    assert "rank 1 crashed on purpose" in result.stderr
