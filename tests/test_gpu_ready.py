"""The GPU paths, checked on a CPU: where torchrun's process takes its GPU, the AMP dtype 'auto' picks, cuDNN's
autotuner, pinned memory for streamed loaders, the compiled module in validation and prediction, the teacher's and
ONNX Runtime's device. (tests/test_cuda.py runs them on a GPU.)"""
import pytest
import torch
from conftest import tiny_cfg
from torch._dynamo.eval_frame import OptimizedModule

from easycls.config.schema import defaults
from easycls.core import distributed
from easycls.core.checkpoints import ModelMeta
from easycls.core.device import resolve_amp, select_device
from easycls.data.loaders import MemoryLoader, StreamLoader
from easycls.engine import builder
from easycls.engine.distill import load_teacher
from easycls.evaluation import predictor
from easycls.evaluation.predictor import InferenceModel, onnx_device, onnx_providers
from easycls.models.factory import create_model


def full_cfg(data, out, **extra):
    return {**defaults(), **tiny_cfg(data, out, **extra)}


@pytest.fixture
def fake_gpus(monkeypatch):
    """A machine that reports two CUDA GPUs; ``calls`` records what would have touched them."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    return calls


def test_a_torchrun_process_takes_its_gpu_before_the_group_s_first_collective(fake_gpus, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **kw: fake_gpus.append(("init", backend, kw.get("device_id"))))
    info = distributed.init_from_env(use_cuda=True)
    assert (info.rank, info.world, info.local_rank) == (1, 2, 1)
    assert fake_gpus == [("set_device", 1), ("init", "nccl", torch.device("cuda", 1))]


@pytest.mark.parametrize("capability,expected", [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                                                 ((7, 5), torch.float16), ((6, 1), torch.float16)])
def test_amp_auto_is_bf16_where_the_gpu_has_it_and_fp16_elsewhere(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda", 0)
    assert resolve_amp("auto", cuda) == expected
    assert (resolve_amp("fp16", cuda), resolve_amp("bf16", cuda), resolve_amp("off", cuda)) == \
        (torch.float16, torch.bfloat16, None)
    assert resolve_amp("auto", torch.device("cpu")) is None


def test_a_cuda_device_turns_on_cudnn_autotuning(fake_gpus, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert select_device({"GPU_ID": "1"}) == torch.device("cuda", 1) and fake_gpus == [("set_device", 1)]
    assert torch.backends.cudnn.benchmark
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert select_device({"GPU_ID": "cpu"}) == torch.device("cpu") and not torch.backends.cudnn.benchmark


@pytest.mark.parametrize("cache,gpu_id,pinned", [("none", "0", True), ("none", "cpu", False), ("ram", "0", None)])
def test_streamed_loaders_pin_memory_for_a_cuda_run(tiny_data, tmp_path, fake_gpus, cache, gpu_id, pinned):
    cfg = full_cfg(tiny_data, tmp_path / "o", cache=cache, GPU_ID=gpu_id)
    train_loader, val_loader, _ = builder.build_train_loaders(cfg, builder.DistInfo())
    for loader in (train_loader, val_loader):
        if pinned is None:
            assert isinstance(loader, MemoryLoader)
        else:
            assert isinstance(loader, StreamLoader) and loader.pin_memory is pinned


def runner_for(tiny_data, tmp_path, **extra):
    cfg = full_cfg(tiny_data, tmp_path / "o", **extra)
    model, meta = builder.build_model(cfg)
    meta.class_names = ["left", "middle", "right"]
    return builder.build_runner(cfg, model, meta, device=torch.device("cpu"))


@pytest.mark.parametrize("ema", [False, True])
def test_validation_and_prediction_use_the_compiled_module_with_compile_true(tiny_data, tmp_path, ema):
    runner = runner_for(tiny_data, tmp_path, compile=True, ema=ema)
    runner.call_hook("before_run")  # EMA makes eval_model here
    net = runner.inference().net
    assert isinstance(net, OptimizedModule) and net._orig_mod is runner.eval_model
    assert (net is runner._compiled) is not ema  # the training step's compiled module when it is the same model
    assert runner.inference().net is net  # compiled once
    assert runner.inference().model is runner.eval_model  # export and heatmaps keep the plain module
    plain = runner_for(tiny_data, tmp_path, compile=False, ema=ema)
    plain.call_hook("before_run")
    assert plain.inference().net is plain.eval_model


def save_checkpoint_of(path, model_name="test_resnet"):
    meta = ModelMeta(model_name, ["left", "middle", "right"], [16, 16], 1, [0.5], [0.5])
    torch.save({"model": create_model(model_name, 3, 1).state_dict(), "meta": meta.to_dict()}, path)
    return meta


def test_predict_from_a_checkpoint_compiles_with_compile_true(tmp_path):
    save_checkpoint_of(tmp_path / "m.pth")
    cfg = {**defaults(), "GPU_ID": "cpu"}
    compiled = InferenceModel.from_checkpoint(str(tmp_path / "m.pth"), {**cfg, "compile": True})
    assert isinstance(compiled.net, OptimizedModule) and compiled.net._orig_mod is compiled.model
    plain = InferenceModel.from_checkpoint(str(tmp_path / "m.pth"), cfg)
    assert plain.net is plain.model


def test_the_teacher_is_placed_on_the_student_s_device(tmp_path, monkeypatch):
    """Under torchrun the student's device is the rank's GPU; the teacher must not go to GPU_ID's (cuda:0)."""
    meta = save_checkpoint_of(tmp_path / "teacher.pth")

    def config_device(*args):
        raise AssertionError("the teacher took the config's device")
    monkeypatch.setattr(predictor, "select_device", config_device)
    cfg = {**defaults(), "teacher_path": str(tmp_path / "teacher.pth"), "GPU_ID": "0"}
    distiller = load_teacher(cfg, meta, torch.device("cpu"))
    assert distiller.teacher.device == torch.device("cpu")


@pytest.mark.parametrize("gpu_id,device", [("1", "cuda:1"), ("0", "cuda:0"), ("cpu", "cpu")])
def test_onnx_runtime_runs_on_the_gpu_that_gpu_id_names(gpu_id, device):
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_device(gpu_id, available) == torch.device(device)
    assert onnx_device(gpu_id, ["CPUExecutionProvider"]) == torch.device("cpu")
    expected = ["CPUExecutionProvider"] if device == "cpu" else \
        [("CUDAExecutionProvider", {"device_id": int(gpu_id)}), "CPUExecutionProvider"]
    assert onnx_providers(torch.device(device)) == expected

