"""pretrained=True with no network and without HF_HUB_OFFLINE: one line naming both remedies within seconds, not a
minute of retries (issue 24). The first two tests use the real network, so they run only where the servers do not
answer; the third stands in a server that never answers, so it runs anywhere."""
import logging
import socket
import time

import pytest
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file
from test_hub import cache_repo, unscanned_folder, weights_of

from easycls.cli.train import train_main
from easycls.models import hub
from easycls.models.hub import create_hub_model, unreachable


def answers(host):
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.fixture
def online_mode_empty_cache(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE unset and an empty HF_HOME / TORCH_HOME, also for the huggingface_hub already imported."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hub, "PROBE_TIMEOUT", 1.0)  # a silent server costs the probe's whole wait
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train_fails_fast(tmp_path, capsys, caplog, **cfg):
    """Run train.py's command in-process; return its one stderr line after checking the code, time and silence."""
    cfg = {"pretrained": True, "save_dir": str(tmp_path / "o"),
           "train_path": unscanned_folder(tmp_path / "never_scanned"), **cfg}
    caplog.set_level(logging.WARNING)
    start = time.perf_counter()
    code = train_main([f"{k}={v!r}" for k, v in cfg.items()])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and seconds < 10, (code, seconds, err)
    assert len(err.splitlines()) == 1, err
    assert "Retrying" not in caplog.text  # huggingface_hub's backoff warnings
    assert not (tmp_path / "o").exists() and not (tmp_path / "data").exists()
    return err


@pytest.mark.skipif(answers("huggingface.co"), reason="huggingface.co answers: this machine has a network")
def test_timm_hub_without_network_is_one_line_naming_both_remedies(online_mode_empty_cache, capsys, caplog):
    tmp_path = online_mode_empty_cache
    err = train_fails_fast(tmp_path, capsys, caplog, model_name="test_efficientnet")
    assert err.startswith("error: cannot get the pretrained weights of test_efficientnet: https://huggingface.co "
                          "cannot be reached (")
    assert err.endswith(f"and they are not in the cache {tmp_path / 'hf' / 'hub'}; either fill that cache once "
                        f"online and run with HF_HUB_OFFLINE=1, or set pretrained to a local .pth/.safetensors file")


@pytest.mark.skipif(answers("download.pytorch.org"), reason="download.pytorch.org answers: this machine has a network")
def test_torchvision_weights_without_network_are_one_line_naming_both_remedies(online_mode_empty_cache, capsys,
                                                                                 caplog):
    tmp_path = online_mode_empty_cache
    err = train_fails_fast(tmp_path, capsys, caplog, model_name="tv:squeezenet1_1", channels=3)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    assert err.startswith("error: cannot get the pretrained weights of tv:squeezenet1_1: download.pytorch.org "
                          "cannot be reached (")
    assert err.endswith(f"and {cached} does not exist; either put the file there once online (TORCH_HOME sets the "
                        f"folder), or set pretrained to a local .pth/.safetensors file")


@pytest.fixture
def silent_server():
    """A local address that accepts connections and never answers: a network that swallows requests."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_hub_that_never_answers_is_given_up_after_the_probe_timeout(online_mode_empty_cache, silent_server,
                                                                       monkeypatch, capsys, caplog):
    tmp_path = online_mode_empty_cache
    start = time.perf_counter()
    assert unreachable(silent_server, timeout=1) is not None
    assert time.perf_counter() - start < 2
    monkeypatch.setattr(hf_constants, "ENDPOINT", silent_server)
    err = train_fails_fast(tmp_path, capsys, caplog, model_name="test_efficientnet")
    assert f"{silent_server} cannot be reached (" in err and "HF_HUB_OFFLINE=1" in err and ".safetensors" in err


def test_a_filled_cache_still_loads_when_the_hub_never_answers(online_mode_empty_cache, silent_server, monkeypatch):
    """Without HF_HUB_OFFLINE the cache is still used: what huggingface_hub itself does when the hub is down."""
    cached = weights_of("test_resnet", seed=11)
    cache_repo(online_mode_empty_cache / "hf", "timm/test_resnet.r160_in1k",
               {"model.safetensors": lambda p: save_file(cached, p)})
    monkeypatch.setattr(hf_constants, "ENDPOINT", silent_server)
    model, arch, mean, std = create_hub_model("test_resnet", True, num_classes=3)
    assert std == [0.5] * 3
    state = model.state_dict()
    assert arch == "test_resnet" and mean == [0.5] * 3 and state["fc.weight"].shape == (3, 96)
    assert all(torch.equal(state[k], v) for k, v in cached.items() if not k.startswith("fc."))
    assert hf_constants.HF_HUB_OFFLINE is False  # the offline switch is put back
