import pandas as pd
import pytest
import torch
from conftest import make_tiny_data, run_script, tiny_cfg, write_config
from safetensors.torch import save_file

from easycls.cli.train import train_main
from easycls.core.errors import CheckpointError, ConfigError
from easycls.models.factory import (
    classifier_prefix,
    create_model,
    load_pretrained,
    model_norm,
    resolve_name,
    set_backbone_trainable,
)
from easycls.models.hub import create_hub_model


@pytest.mark.parametrize("alias,name", [("mobilenetv3", "mobilenetv3_large_100"), ("mobilenetv2", "mobilenetv2_100"),
                                        ("efficientnet-b0", "efficientnet_b0"), ("resnet50", "resnet50")])
def test_seed_aliases(alias, name):
    assert resolve_name(alias) == name


def test_unknown_model_suggests_names():
    with pytest.raises(ConfigError, match="unknown model_name 'resnet1O'.*did you mean"):
        resolve_name("resnet1O")


@pytest.mark.parametrize("name", ["test_resnet", "tv:resnet18", "tv:mobilenet_v3_small"])
def test_create_model_channels_and_classes(name):
    model = create_model(name, num_classes=4, in_chans=1, dropout=0.2).eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 4)


def test_torchvision_dropout_is_applied_before_the_classifier():
    model = create_model("tv:resnet18", num_classes=3, in_chans=3, dropout=0.9)
    x = torch.rand(4, 3, 32, 32)
    model.train()
    torch.manual_seed(0)
    train_out = model(x)
    model.eval()
    assert not torch.allclose(train_out, model(x))
    assert set(model.state_dict()) == set(create_model("tv:resnet18", 3).state_dict())  # keys unchanged


def test_pretrained_report_counts_prefixes_and_head(tmp_path):
    source = create_model("test_resnet", num_classes=5, in_chans=3)
    state = {"module." + k: v for k, v in source.state_dict().items()}
    state["module.extra.weight"] = torch.zeros(3)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": state}, path)
    target = create_model("test_resnet", num_classes=3, in_chans=3)
    report = load_pretrained(target, str(path))
    total = len(target.state_dict())
    assert report.head == "fc"
    assert report.shape_skipped == ["fc.weight", "fc.bias"]  # 5 classes -> 3 classes
    assert len(report.loaded) == total - 2 and report.missing == ["fc.weight", "fc.bias"]
    assert report.unexpected == ["module.extra.weight"]
    assert report.backbone_fraction == 1.0
    key = "conv1.0.weight"
    assert torch.equal(target.state_dict()[key], source.state_dict()[key])


def test_pretrained_rgb_stem_adapts_to_grayscale_and_safetensors(tmp_path):
    source = create_model("test_resnet", num_classes=3, in_chans=3)
    path = tmp_path / "w.safetensors"
    save_file({"model." + k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = create_model("test_resnet", num_classes=3, in_chans=1)
    report = load_pretrained(target, str(path))
    assert report.adapted == ["conv1.0.weight"] and not report.missing
    assert torch.allclose(target.conv1[0].weight, source.conv1[0].weight.sum(1, keepdim=True))


def test_user_key_rules(tmp_path):
    source = create_model("test_resnet", num_classes=3)
    torch.save({"backbone_" + k: v for k, v in source.state_dict().items()}, tmp_path / "w.pt")
    report = load_pretrained(create_model("test_resnet", 3), str(tmp_path / "w.pt"), {"^backbone_": ""})
    assert report.backbone_fraction == 1.0 and not report.unexpected


def test_wrong_file_is_an_error(tmp_path):
    torch.save(create_model("tv:resnet18", 3).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"only \d+ of \d+ backbone tensors match this model \(\d+%\); is it"):
        load_pretrained(create_model("test_resnet", 3), str(tmp_path / "other.pth"))


def test_freeze_leaves_only_the_head_trainable():
    model = create_model("test_efficientnet", 3)
    set_backbone_trainable(model, False)
    head = classifier_prefix(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert head == "classifier" and trainable == ["classifier.weight", "classifier.bias"]
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_backbone_batchnorm_statistics_keep_following_the_data():
    """Unlike timm.utils.freeze: no FrozenBatchNorm2d, and the running statistics move while only the head learns."""
    model = create_model("test_resnet", 3)
    set_backbone_trainable(model, False)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(type(m) is torch.nn.BatchNorm2d for m in bns)
    before = bns[0].running_mean.clone()
    model.train()(torch.rand(4, 3, 32, 32) + 5)
    assert not torch.allclose(bns[0].running_mean, before)


@pytest.mark.parametrize("name,channels,mean,std", [
    ("test_resnet", 3, [0.5] * 3, [0.5] * 3),  # its timm config's own values
    ("resnet18", 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ("tv:resnet18", 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),  # no timm config: ImageNet's
    ("resnet18", 1, [pytest.approx(0.449)], [pytest.approx(0.226)]),  # averaged for one channel
])
def test_model_norm_from_timm_data_config(name, channels, mean, std):
    assert model_norm(create_model(name, 3, channels), channels) == (mean, std)
    assert model_norm(create_model(name, 3, 3), 1, [0.2, 0.4, 0.6], [0.3] * 3) == ([pytest.approx(0.4)], [0.3])


def test_small_input_resnet_keeps_twice_the_resolution_at_a_quarter_of_the_parameters():
    small, base = create_model("resnet10t_small", 10, in_chans=1).eval(), create_model("resnet10t", 10, 1).eval()
    x = torch.rand(2, 1, 28, 28)
    assert small.forward_features(x).shape == (2, 256, 2, 2)  # resnet10t ends at 1x1
    assert base.forward_features(x).shape == (2, 512, 1, 1)
    assert small(x).shape == (2, 10)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in base.parameters()) / 3
    assert [i["reduction"] for i in small.feature_info] == [2, 2, 4, 8, 16]
    assert classifier_prefix(small) == "fc"


def test_small_input_resnet_has_no_hub_weights():
    with pytest.raises(CheckpointError, match="resnet10t_small has no pretrained weights"):
        create_hub_model("resnet10t_small", True, num_classes=10)


def test_small_input_resnet_trains_and_reloads_by_name_in_a_new_process(tmp_path, monkeypatch):
    data = make_tiny_data(tmp_path)
    cfg = tiny_cfg(data, tmp_path / "out", model_name="resnet10t_small", epochs=4, optimizer="AdamW",
                   learning_rate=0.003)
    config = write_config(tmp_path / "config.py", cfg)
    monkeypatch.chdir(tmp_path)
    assert train_main(["--config", config]) == 0
    assert pd.read_csv(tmp_path / "out" / "results.csv")["val_acc"].max() >= 0.9
    result = run_script("predict.py", "--config", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pre = pd.read_csv(tmp_path / "out" / "pre.csv")
    truth = pre["image_id"].str.split("/").str[0]
    assert len(pre) == 18 and (pre["class_name"] == truth).mean() >= 0.9
