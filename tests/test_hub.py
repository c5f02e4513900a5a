"""pretrained=True and friends, offline: a timm hub cache, an hf-hub repository and a torchvision weights file that
the tests lay out themselves (HF_HUB_OFFLINE=1; nothing touches the network)."""
import os
import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import cfg_overrides, tiny_cfg
from huggingface_hub import constants as hf_constants
from PIL import Image
from safetensors.torch import save_file

from easycls.cli.inference import predict_main
from easycls.cli.train import train_main

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(hf_home, repo, files):
    """Lay out ``files`` ({name: writer(path)}) as a snapshot of ``repo`` in huggingface_hub's cache."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, write in files.items():
        write(snapshot / name)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)


def weights_of(name, seed):
    import timm
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}


@pytest.fixture
def run(monkeypatch, capsys):
    """Run a command's entry point in this process as ``python <script> *args`` would, with ``env`` set (HF_HOME
    and TORCH_HOME are read where huggingface_hub and torch.hub read them) and HF_HUB_OFFLINE=1; returns its exit
    code and output."""
    mains = {"train.py": train_main, "predict.py": predict_main}

    def run_main(script, *args, env=None, cwd=None):
        env = {"HF_HOME": os.environ.get("HF_HOME", ""), **(env or {})}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        if env["HF_HOME"]:
            monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", os.path.join(env["HF_HOME"], "hub"))
        if cwd:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = mains[script](list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)
    return run_main


@pytest.fixture
def hf_home(tmp_path):
    home = tmp_path / "hf"
    cached = weights_of("test_resnet", seed=7)
    cache_repo(home, "timm/test_resnet.r160_in1k", {"model.safetensors": lambda p: save_file(cached, p)})
    return home, cached


def test_pretrained_true_loads_the_cached_hub_weights_and_a_frozen_backbone_keeps_them(tiny_data, tmp_path,
                                                                                       hf_home, run):
    home, cached = hf_home
    cfg = tiny_cfg(tiny_data, tmp_path / "o", pretrained=True, freeze_nonlinear_epoch=2, epochs=2, channels=1)
    result = run("train.py", *cfg_overrides(cfg), env={"HF_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    report = next(line for line in result.stdout.splitlines() if line.startswith("pretrained:"))
    assert report == ("pretrained: timm/test_resnet.r160_in1k through timm, backbone loaded, new head 'fc' for 3 "
                      "classes (the weights have 1000), input conv conv1.0 adapted from 3 to 1 channel(s)")
    trained = torch.load(tmp_path / "o" / "last.pth", weights_only=True)["model"]
    frozen = [k for k in cached if k in trained and not k.startswith("fc.") and "running" not in k
              and "num_batches" not in k and k != "conv1.0.weight"]
    assert len(frozen) > 20 and all(torch.equal(trained[k], cached[k]) for k in frozen)
    stem = cached["conv1.0.weight"].sum(1, keepdim=True)  # an RGB stem summed for grayscale input
    assert torch.allclose(trained["conv1.0.weight"], stem)
    meta = torch.load(tmp_path / "o" / "best.pth", weights_only=True)["meta"]
    assert meta["mean"] == [0.5] and meta["std"] == [0.5]  # test_resnet's pretrained normalisation


def unscanned_folder(root):
    """Two class folders of one image each: listed to count the classes, never decoded before the weights come."""
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / name / "1.png")
    return str(root)


def test_nothing_cached_is_one_line_before_any_folder_or_scan(tmp_path, run):
    cfg = {"model_name": "test_efficientnet", "pretrained": True, "save_dir": str(tmp_path / "o"),
           "train_path": unscanned_folder(tmp_path / "never_scanned")}
    result = run("train.py", *cfg_overrides(cfg), env={"HF_HOME": str(tmp_path / "empty")}, cwd=tmp_path)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert err == (f"error: cannot get the pretrained weights of test_efficientnet: HF_HUB_OFFLINE is set and they "
                   f"are not in the cache {tmp_path / 'empty' / 'hub'}; either fill that cache once online and run "
                   f"with HF_HUB_OFFLINE=1, or set pretrained to a local .pth/.safetensors file")
    assert not os.path.exists(tmp_path / "o") and not os.path.exists(tmp_path / "data")


def test_hf_hub_repository_defines_the_architecture(tiny_data, tmp_path, run):
    import timm
    home = tmp_path / "hf"
    torch.manual_seed(3)
    source = timm.create_model("test_resnet")
    source.pretrained_cfg = {**source.pretrained_cfg, "mean": (0.4,) * 3, "std": (0.2,) * 3}
    timm.models.save_for_hf(source, str(tmp_path / "export"), safe_serialization=True)  # as timm publishes one
    cache_repo(home, "someone/bars-resnet", {name: lambda p, n=name: shutil.copy(tmp_path / "export" / n, p)
                                             for name in ("config.json", "model.safetensors")})
    cfg = tiny_cfg(tiny_data, tmp_path / "o", model_name="resnet18", pretrained="hf-hub:someone/bars-resnet",
                   epochs=1)
    result = run("train.py", *cfg_overrides(cfg), env={"HF_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    meta = torch.load(tmp_path / "o" / "best.pth", weights_only=True)["meta"]
    assert meta["model_name"] == "test_resnet" and meta["mean"] == [pytest.approx(0.4)]
    assert run("predict.py", *cfg_overrides(cfg)).returncode == 0  # the checkpoint rebuilds without the hub


def test_torchvision_default_weights_from_the_torch_hub_cache(tiny_data, tmp_path, run):
    import torchvision
    weights = torchvision.models.get_model_weights("squeezenet1_1").DEFAULT
    torch.manual_seed(5)
    state = torchvision.models.squeezenet1_1().state_dict()
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / os.path.basename(weights.url))
    cfg = tiny_cfg(tiny_data, tmp_path / "o", model_name="tv:squeezenet1_1", pretrained=True, epochs=1,
                   target_img_size=[32, 32], channels=3)
    result = run("train.py", *cfg_overrides(cfg), env={"TORCH_HOME": str(tmp_path / "torch")})
    assert result.returncode == 0, result.stderr
    assert "pretrained: loaded" in result.stdout
    bad = run("train.py", *cfg_overrides({**cfg, "pretrained": "IMAGENET1K_V9"}),
              env={"TORCH_HOME": str(tmp_path / "torch")})
    assert bad.returncode == 2 and "has no weights 'IMAGENET1K_V9'; choose from IMAGENET1K_V1" in bad.stderr
