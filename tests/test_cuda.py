"""The ``cuda`` lane: the GPU paths on a GPU, skipped without one (``python -m pytest -m cuda`` runs it alone).

fp16 with a GradScaler, bf16, ``compile=True``, channels_last, pinned streamed batches, and a 2-GPU torchrun run
with distillation, EMA and calibration (skipped with fewer than 2 GPUs). tests/test_gpu_ready.py checks the same
decisions on a CPU.
"""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import ROOT, cfg_overrides, make_tiny_data, tiny_cfg
from run_hooks import config_with_hooks
from torch._dynamo.eval_frame import OptimizedModule

from easycls.cli import predict_main, train_main
from easycls.config.schema import defaults
from easycls.core.checkpoints import ModelMeta
from easycls.core.device import bf16_native, resolve_amp
from easycls.data.loaders import Batch, StreamLoader
from easycls.engine import builder

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda", 0)


class ListLoader(list):
    def set_epoch(self, epoch, start_batch=0):
        pass


def linear_runner(tmp_path, **extra):
    """A small convolutional model on GPU 0 with the config's amp, compile and memory format."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 3))
    meta = ModelMeta("small", ["a", "b", "c"], [16, 16], 1, [0.5], [0.5])
    cfg = {**defaults(), "save_dir": str(tmp_path), "optimizer": "SGD-0.9", "learning_rate": 0.1, "augment": "none",
           "class_number": 3, "GPU_ID": "0", **extra}
    return builder.build_runner(cfg, model, meta, device=CUDA, hooks=[])


def batches(count=4, size=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 255, (count * size, 1, 16, 16), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 3, (count * size,), generator=gen)
    return ListLoader(Batch(images[i:i + size], labels[i:i + size], torch.arange(i, i + size), [])
                      for i in range(0, count * size, size))


def weights(runner):
    return {k: v.detach().clone() for k, v in runner.model.named_parameters()}


def test_fp16_with_a_gradscaler_skips_an_overflowing_step_and_trains_on_the_others(tmp_path):
    runner = linear_runner(tmp_path, amp="fp16")
    assert runner.stepper.amp_dtype == torch.float16 and runner.stepper.scaler.is_enabled()
    loss_fn, calls = runner.stepper.loss_fn, []

    def first_is_inf(logits, target):
        calls.append(1)
        return loss_fn(logits, target) * (float("inf") if len(calls) == 1 else 1.0)
    runner.stepper.loss_fn = first_is_inf
    before, scale = weights(runner), runner.stepper.scaler.get_scale()
    first, rest = batches()[:1], batches()[1:]
    runner.onTrainStep(ListLoader(first), 0)
    assert all(torch.equal(before[k], v) for k, v in weights(runner).items())  # skipped by the scaler
    assert runner.stepper.scaler.get_scale() == scale / 2
    runner.onTrainStep(ListLoader(rest), 0)
    after = weights(runner)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], v) for k, v in after.items())


def test_bf16_trains_without_a_gradscaler_and_auto_picks_it_where_the_gpu_has_it(tmp_path):
    runner = linear_runner(tmp_path, amp="bf16")
    assert runner.stepper.amp_dtype == torch.bfloat16 and not runner.stepper.scaler.is_enabled()
    metrics = runner.onTrainStep(batches(), 0)
    assert runner.optimizer_steps == 4 and torch.isfinite(torch.tensor(metrics["train_loss"]))
    assert resolve_amp("auto", CUDA) == (torch.bfloat16 if bf16_native(CUDA) else torch.float16)
    assert linear_runner(tmp_path, amp="auto").stepper.scaler.is_enabled() is not bf16_native(CUDA)


def test_channels_last_gives_the_contiguous_model_s_numbers(tmp_path):
    last, plain = (linear_runner(tmp_path, channels_last=flag, amp="off") for flag in (True, False))
    conv = last.model[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    batch = batches()[0]
    a, b = last.inference(tta=False).logits(batch.images), plain.inference(tta=False).logits(batch.images)
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_compile_true_trains_validates_and_predicts_with_the_compiled_module(tiny_data, tmp_path):
    runner, eager = (linear_runner(tmp_path, compile=flag, amp="off") for flag in (True, False))
    assert isinstance(runner.inference().net, OptimizedModule)
    images = batches()[0].images
    assert torch.allclose(runner.inference().logits(images), eager.inference().logits(images), atol=1e-3)
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=1, compile=True, GPU_ID="0")
    assert train_main(cfg_overrides(cfg)) == 0
    assert predict_main(cfg_overrides(cfg)) == 0  # test_path: 18 images
    assert len(pd.read_csv(tmp_path / "o" / "pre.csv")) == 18


def test_streamed_batches_arrive_in_pinned_memory(tiny_data, tmp_path):
    cfg = {**defaults(), **tiny_cfg(tiny_data, tmp_path / "o", cache="none", GPU_ID="0")}
    train_loader, _, _ = builder.build_train_loaders(cfg, builder.DistInfo())
    assert isinstance(train_loader, StreamLoader)
    train_loader.set_epoch(0)
    assert next(iter(train_loader)).images.is_pinned()


def test_cudnn_autotunes_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert builder.select_device({"GPU_ID": "0"}) == CUDA and torch.backends.cudnn.benchmark


def torchrun(*args, timeout=600):
    launcher = shutil.which("torchrun")
    command = [launcher] if launcher else [sys.executable, "-m", "torch.distributed.run"]
    return subprocess.run(command + ["--standalone", "--nproc_per_node=2", *args], capture_output=True, text=True,
                          check=False, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpus_train_with_distillation_ema_and_calibration(tmp_path):
    data = make_tiny_data(tmp_path)
    teacher = tiny_cfg(data, tmp_path / "teacher", model_name="test_efficientnet", channels=3,
                       target_img_size=[20, 20], epochs=2, GPU_ID="0")
    assert train_main(cfg_overrides(teacher)) == 0
    cfg = tiny_cfg(data, tmp_path / "ddp", epochs=2, batch_size=8, use_distill=1,
                   teacher_path=str(tmp_path / "teacher" / "best.pth"), ema=True, ema_decay=0.9, calibrate=True,
                   sync_bn=True, GPU_ID="0")
    result = torchrun(os.path.join(ROOT, "train.py"), "--config",
                      config_with_hooks(tmp_path / "ddp.py", cfg, "[SaveReplica()]"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x2 processes" in result.stdout and "distilling from the teacher" in result.stdout
    replicas = [torch.load(tmp_path / "ddp" / f"replica{r}.pth", weights_only=True) for r in (0, 1)]
    for part in ("model", "eval_model"):
        assert [k for k in replicas[0][part] if not torch.equal(replicas[0][part][k], replicas[1][part][k])] == []
    assert replicas[0]["temperature"] == replicas[1]["temperature"]
    last = torch.load(tmp_path / "ddp" / "last.pth", weights_only=True)
    assert len(last["rng"]) == 2 and all("cuda" in state for state in last["rng"])
    assert not torch.equal(last["rng"][0]["cuda"], last["rng"][1]["cuda"])  # seeded random_seed + rank
