"""mixup / cutmix (timm's Mixup) and the data preview: soft targets through every loss, and a real run."""
import os

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import cfg_overrides, tiny_cfg
from PIL import Image

from easycls import Hook, register_hook
from easycls.cli.train import train_main
from easycls.engine.hooks.base import HOOKS
from easycls.engine.step import GradientStep
from easycls.optim.losses import create_loss, list_losses


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_takes_soft_targets_and_one_hot_equals_hard(name):
    spec = {"Focalloss": "Focalloss-2"}.get(name, name)
    logits = torch.randn(6, 4, requires_grad=True)
    hard = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = create_loss(spec)
    assert torch.allclose(loss(logits, F.one_hot(hard, 4).float()), loss(logits, hard), atol=1e-6)
    soft = torch.softmax(torch.randn(6, 4), 1)
    loss(logits, soft).backward()
    assert torch.isfinite(logits.grad).all()


def test_the_step_mixes_and_leaves_an_odd_image_out():
    from timm.data import Mixup
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    seen = {}
    mix = Mixup(mixup_alpha=0.8, label_smoothing=0.0, num_classes=3)

    def loss_fn(logits, target):
        seen["target"] = target
        return F.cross_entropy(logits, target)
    step = GradientStep(torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, torch.device("cpu"), mix=mix)
    out = step(model, torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 2, 1]))  # pairs (0, 2) and (1, 2)
    assert out["stepped"] and len(out["labels"]) == 4 and out["inputs"].shape[0] == 4
    assert seen["target"].shape == (4, 3) and torch.allclose(seen["target"].sum(1), torch.ones(4))
    assert (seen["target"].max(1).values < 1).all()  # every row is a blend of two labels


class Targets(Hook):
    """Keeps every training batch's targets, as the loss saw them."""

    seen: list = []

    def after_train_iter(self, runner, batch_idx, batch, outputs):
        Targets.seen.append(outputs["targets"].detach().clone())


@pytest.fixture
def targets():
    Targets.seen = []
    register_hook(Targets)
    yield Targets.seen
    HOOKS.pop("Targets")


def test_mixup_cutmix_and_the_preview_train_with_the_seed_switches(tiny_data, tmp_path, targets):
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=2, mixup=True, cutmix=0.5, mixup_switch_prob=0.5,
                   show_data=True, label_smooth=0.1, batch_size=8, loss="Focalloss-2", custom_hooks=["Targets"])
    assert train_main(cfg_overrides(cfg)) == 0
    preview = Image.open(tmp_path / "o" / "data_preview.png")
    assert preview.size[0] > 500 and preview.getextrema() != ((255, 255),) * 3
    results = pd.read_csv(tmp_path / "o" / "results.csv")
    assert len(results) == 2 and results["train_loss"].notna().all()
    state = torch.load(tmp_path / "o" / "last.pth", weights_only=True)
    assert state["hooks"]["DataPreviewHook"] == {"done": True}
    assert state["optimizer_steps"] == len(targets) == 2 * 48 // 8  # even batches: no image sits out
    soft = torch.cat(targets)
    assert soft.shape == (48 * 2, 3) and torch.allclose(soft.sum(1), torch.ones(len(soft)))
    assert soft.min() >= 0.1 / 3 - 1e-6  # label_smooth reached timm's Mixup: every class keeps smooth / classes
    assert ((soft > 0.2).sum(1) >= 2).any()  # and mixing blended two labels into one target
    assert os.path.getsize(tmp_path / "o" / "report.html") > 0
