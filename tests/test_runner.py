"""ModelRunner: the order of hook events, gradient accumulation, EMA, and the numerics guards."""
import os

import pytest
import torch
from conftest import cfg_overrides, tiny_cfg

from easycls.cli.train import train_main
from easycls.config.schema import defaults
from easycls.core.checkpoints import ModelMeta, split_checkpoint
from easycls.core.errors import TrainingError
from easycls.data.loaders import Batch
from easycls.engine import builder
from easycls.engine.hooks.base import EVENTS, Hook, HookList


def full_cfg(data, out, **extra):
    return {**defaults(), **tiny_cfg(data, out, **extra)}


def make_runner(tiny_data, tmp_path, loss_fn=None, hooks=None, **extra):
    cfg = full_cfg(tiny_data, tmp_path / "o", **extra)
    train_loader, val_loader, classes = builder.build_train_loaders(cfg, builder.DistInfo())
    model, meta = builder.build_model(cfg)
    meta.class_names = classes
    runner = builder.build_runner(cfg, model, meta, device=torch.device("cpu"), loss_fn=loss_fn, hooks=hooks)
    return runner, train_loader, val_loader


# ----------------------------------------------------------------------------- events
def test_events_come_in_order_once_per_epoch_and_once_per_batch(tiny_data, tmp_path):
    events = []

    class Rec(Hook):  # overrides every event, so the runner binds each of them
        pass
    for event in EVENTS:
        setattr(Rec, event, lambda self, runner, *args, _e=event: events.append((_e, runner.epoch)))
    cfg = full_cfg(tiny_data, tmp_path / "o", epochs=2, batch_size=16)
    runner, train_loader, val_loader = make_runner(tiny_data, tmp_path, epochs=2, batch_size=16,
                                                   hooks=builder.build_hooks(cfg) + [Rec()])
    runner.train(train_loader, val_loader)
    per_epoch = lambda e: ([("before_train_epoch", e)] + [("before_train_iter", e), ("after_train_iter", e)] * 3  # noqa
                           + [("after_train_epoch", e), ("before_val_epoch", e), ("after_val_epoch", e)])
    assert len(train_loader) == 3
    assert events == [("before_run", 0)] + per_epoch(0) + per_epoch(1) + [("after_run", 1)]


def test_priority_orders_hooks_and_equal_priorities_keep_their_order(tiny_data, tmp_path):
    calls = []

    def hook(name, priority):
        class H(Hook):
            def before_run(self, runner):
                calls.append(name)
        h = H()
        h.priority = priority
        return h
    runner, train_loader, val_loader = make_runner(tiny_data, tmp_path, epochs=1, hooks=[
        hook("b", 50), hook("c", 50), hook("first", 5), hook("last", 99), hook("d", 50)])
    runner.train(train_loader, val_loader)
    assert calls == ["first", "b", "c", "d", "last"]


# ----------------------------------------------------------------------------- accumulation
def linear_runner(tmp_path, accumulate, **extra):
    """A runner around a model without batch norm, so a batch's update does not depend on how it is split."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    meta = ModelMeta("linear", ["a", "b", "c"], [4, 4], 1, [0.5], [0.5])
    cfg = {**defaults(), "save_dir": str(tmp_path), "accumulate_steps": accumulate, "optimizer": "SGD-0.9",
           "learning_rate": 0.1, "augment": "none", "channels_last": False, "class_number": 3, **extra}
    return builder.build_runner(cfg, model, meta, device=torch.device("cpu"), hooks=[])


def batches(images, labels, size):
    return [Batch(images[i:i + size], labels[i:i + size], torch.arange(i, i + size), [])
            for i in range(0, len(labels), size)]


class ListLoader(list):
    def set_epoch(self, epoch):
        pass


@pytest.mark.parametrize("clip", [0, 0.5])
def test_n_batches_accumulated_equal_one_batch_n_times_larger(tmp_path, clip):
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (32, 1, 4, 4), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 3, (32,), generator=gen)
    big = linear_runner(tmp_path, 1, clip_gradient=clip)
    small = linear_runner(tmp_path, 4, clip_gradient=clip)
    for _ in range(2):  # two optimizer steps, so momentum is compared too
        big.onTrainStep(ListLoader(batches(images, labels, 32)), 0)
        small.onTrainStep(ListLoader(batches(images, labels, 8)), 0)
    assert big.optimizer_steps == small.optimizer_steps == 2
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


def test_a_final_partial_group_still_steps_and_leaves_no_gradient(tmp_path):
    images = torch.randint(0, 255, (40, 1, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 3, (40,))
    runner = linear_runner(tmp_path, 4)
    runner.onTrainStep(ListLoader(batches(images, labels, 8)), 0)  # 5 batches: a group of 4, then 1
    assert runner.optimizer_steps == 2
    assert all(p.grad is None for p in runner.model.parameters())


# ----------------------------------------------------------------------------- EMA
def test_ema_weights_are_validated_saved_as_best_and_used_for_prediction(tiny_data, tmp_path):
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=3, ema=True, ema_decay=0.9, save_best_only=False,
                   augment="light", early_stop_patience=0)
    assert train_main(cfg_overrides(cfg)) == 0
    last = torch.load(tmp_path / "o" / "last.pth", weights_only=True)
    best = torch.load(tmp_path / "o" / "best.pth", weights_only=True)
    assert set(last["eval_model"]) == set(last["model"])
    assert any(not torch.equal(last["eval_model"][k], last["model"][k]) for k in last["model"])
    best_epoch = best["epoch"]
    snapshot = torch.load(tmp_path / "o" / f"epoch_{best_epoch + 1:03d}.pth", weights_only=True)
    assert all(torch.equal(best["model"][k], snapshot["eval_model"][k]) for k in best["model"])
    weights, _ = split_checkpoint(last, "last.pth")
    assert weights is last["eval_model"]  # evaluate/predict on last.pth use the average too


def test_ema_follows_timm_warmup_decay(tiny_data, tmp_path):
    runner, train_loader, val_loader = make_runner(tiny_data, tmp_path, epochs=1, ema=True, ema_decay=0.9998)
    runner.train(train_loader, val_loader)
    ema = next(h for h in runner.hooks if type(h).__name__ == "EMAHook").ema
    assert runner.eval_model is ema.module and runner.optimizer_steps == 3
    assert ema.get_decay(runner.optimizer_steps) == pytest.approx(1 - 3 ** (-2 / 3))  # warm-up, not 0.9998


# ----------------------------------------------------------------------------- numerics
class NanLoss(torch.nn.Module):
    def forward(self, logits, target):
        return torch.nn.functional.cross_entropy(logits, target) * float("nan")


def test_non_finite_loss_without_amp_stops_naming_epoch_and_step(tiny_data, tmp_path):
    runner, train_loader, val_loader = make_runner(tiny_data, tmp_path, NanLoss(), batch_size=8)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    with pytest.raises(TrainingError, match=r"not finite .* at epoch 1, step 3, 3 steps in a row"):
        runner.train(train_loader, val_loader)
    after = runner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)
    assert not os.path.exists(tmp_path / "o" / "last.pth")


def test_bf16_without_a_gradscaler_skips_non_finite_steps_too(tiny_data, tmp_path):
    runner, train_loader, val_loader = make_runner(tiny_data, tmp_path, NanLoss(), batch_size=8)
    runner.stepper.amp_dtype = torch.bfloat16  # amp='bf16': autocast without a GradScaler
    before = {k: v.clone() for k, v in runner.model.named_parameters()}
    with pytest.raises(TrainingError, match=r"not finite .* at epoch 1, step 3, 3 steps in a row"):
        runner.train(train_loader, val_loader)
    assert all(torch.equal(before[k], v) for k, v in runner.model.named_parameters())


def test_gradscaler_skips_steps_with_non_finite_loss(tiny_data, tmp_path):
    """The AMP path (fp16 + GradScaler): a NaN loss makes the scaler skip the step instead of stopping."""
    runner, train_loader, _ = make_runner(tiny_data, tmp_path, NanLoss(), batch_size=8)
    runner.stepper.amp_dtype = torch.bfloat16  # CPU autocast; fp16 autocast is CUDA's
    runner.stepper.scaler = torch.amp.GradScaler("cpu", enabled=True)
    weights = {k: v.clone() for k, v in runner.model.named_parameters()}
    runner.onTrainStep(train_loader, 0)  # no error although every loss is NaN
    assert all(torch.equal(weights[k], v) for k, v in runner.model.named_parameters())
    assert runner.stepper.scaler.get_scale() < 2.0 ** 16  # the scaler backed off at every skipped step


# ----------------------------------------------------------------------------- unreadable batches
def test_a_batch_with_no_readable_image_still_takes_its_place_in_the_step(tmp_path):
    """An all-unreadable batch (the streaming loader's empty Batch) runs the previous batch at weight 0: its group
    still steps where it ends, with the other batches' gradients only, and every batch index reaches the stepper
    (under DDP, the all-reduce)."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (24, 1, 4, 4), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 3, (24,), generator=gen)
    parts = batches(images, labels, 8)
    empty = Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), torch.empty(0), [])
    seen = []

    class Steps(Hook):
        def after_train_iter(self, runner, batch_idx, batch, outputs):
            seen.append((batch_idx, outputs["stepped"]))
    with_gap = linear_runner(tmp_path, 2)
    with_gap.hooks = HookList([Steps()])
    with_gap.onTrainStep(ListLoader([parts[0], empty, parts[2]]), 0)
    assert seen == [(0, False), (1, True), (2, True)] and with_gap.optimizer_steps == 2
    assert with_gap._count == 16  # the stand-in counts in no metric
    ref = linear_runner(tmp_path, 2)  # the same updates: batch 0 as half of a group of 2, then batch 2 alone
    for batch, index, count in ((parts[0], 1, 2), (parts[2], 0, 1)):
        ref.stepper(ref._net, ref.preprocess(batch.images, train=True), batch.labels, index, count)
    for a, b in zip(with_gap.model.parameters(), ref.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
