import pytest
import torch
import torch.nn as nn

from easycls.core.errors import SpecError
from easycls.optim.losses import create_loss, list_losses
from easycls.optim.optimizers import create_optimizer, list_optimizers
from easycls.optim.schedulers import SCHEDULERS, create_scheduler, list_schedulers


def tiny_model():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_builds_and_backprops(name):
    loss_fn = create_loss(name, label_smooth=0.1, class_weight=[1.0, 2.0, 0.5])
    logits = torch.randn(6, 3, requires_grad=True)
    loss = loss_fn(logits, torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert logits.grad.abs().sum() > 0


def test_focal_gamma_zero_equals_cross_entropy():
    logits, target = torch.randn(8, 4), torch.randint(0, 4, (8,))
    focal = create_loss("Focalloss-0")(logits, target)
    assert torch.allclose(focal, nn.functional.cross_entropy(logits, target), atol=1e-6)
    assert create_loss("focalloss-2")(logits, target) < focal  # focusing shrinks the loss


@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_steps(name):
    model = tiny_model()
    opt = create_optimizer(name, model, lr=0.01, weight_decay=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_no_weight_decay_on_bias_and_norm():
    model = tiny_model()
    opt = create_optimizer("AdamW", model, lr=0.01, weight_decay=0.05)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay[id(p)] == (0.05 if p.ndim > 1 else 0.0), name


def model_without_null_gradients():
    """Every parameter has a real gradient. In :func:`tiny_model` the first Linear's bias feeds a BatchNorm, so its
    gradient is analytically zero: Adam turns that float noise (~1e-9, signed differently by the fused and the
    loop kernel on some CPUs) into full learning-rate steps, and the two kernels part by 1e-3 in four steps."""
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


@pytest.mark.parametrize("spec", ["Adam", "AdamW", "lookahead_adamw"])
def test_adam_uses_the_fused_kernel_with_the_same_updates(spec):
    """Adam and AdamW get torch's fused kernel (one pass over the parameters). Four steps, the first layer frozen
    for the first two as freeze_nonlinear_epoch does, give the weights the per-tensor loop gives."""
    torch.manual_seed(0)
    fused_model, loop_model = model_without_null_gradients(), model_without_null_gradients()
    loop_model.load_state_dict(fused_model.state_dict())
    fused = create_optimizer(spec, fused_model, lr=0.01, weight_decay=0.01)
    assert getattr(fused, "base_optimizer", fused).defaults["fused"] is True  # Lookahead wraps a base optimizer
    loop = create_optimizer(spec, loop_model, lr=0.01, weight_decay=0.01)
    for group in getattr(loop, "base_optimizer", loop).param_groups:
        group["fused"] = False
    x = torch.randn(16, 4)
    for step in range(4):
        for model, opt in ((fused_model, fused), (loop_model, loop)):
            model[0].requires_grad_(step >= 2)
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(fused_model.parameters(), loop_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    for name in ("RAdam", "SGD-0.9"):
        assert not create_optimizer(name, tiny_model(), 0.01, 0.0).defaults.get("fused")


def test_any_timm_optimizer_name_works():
    opt = create_optimizer("madgrad", tiny_model(), lr=0.01, weight_decay=0.0)
    assert type(opt).__name__ == "MADGRAD"


def test_frozen_parameters_are_in_the_optimizer():
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    opt = create_optimizer("Adam", model, lr=0.01, weight_decay=0.0)
    assert any(p is model[0].weight for g in opt.param_groups for p in g["params"])
    assert not model[0].weight.requires_grad  # left as it was


@pytest.mark.parametrize("name", list_schedulers())
def test_every_scheduler_steps(name):
    entry = SCHEDULERS.get(name)
    opt = torch.optim.SGD(tiny_model().parameters(), lr=0.1)
    sched = create_scheduler(entry.example if entry.args and entry.args[0].default is None else name, opt,
                             epochs=10, warmup=2, mode="max")
    lrs = []
    for epoch in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # as an epoch does; stepping the scheduler first makes torch warn
        sched.step(0.5)
    assert lrs[0] == pytest.approx(0.1 / 3) and lrs[1] == pytest.approx(0.2 / 3) and lrs[2] == pytest.approx(0.1)
    assert all(lr > 0 or name == "cosine" for lr in lrs)


@pytest.mark.parametrize("spec,expected", [
    ("step-4-0.8", [1, 1, 1, 1, .8, .8, .8, .8, .64]),
    ("multi-2,5-0.1", [1, 1, .1, .1, .1, .01]),
    ("SGDR-2-2", [1, .5, 1, 0.853553, .5, 0.146447]),
    ("default-0.5-1", [1, 1, 1, .5, .5, .25]),
    ("cosine", [1, 0.853553, 0.5, 0.146447, 0]),
])
def test_scheduler_specs_follow_torch(spec, expected):
    opt = torch.optim.SGD(tiny_model().parameters(), lr=1.0)
    sched = create_scheduler(spec, opt, epochs=4, mode="max")
    lrs = []
    for _ in expected:
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(0.5)  # a flat metric: the plateau scheduler decays after each patience run
    assert lrs == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("registry_parse,spec,fragment", [
    (SCHEDULERS.parse, "SGDR", "needs <T0:int>"),
    (SCHEDULERS.parse, "step-4-x", "<gamma:float> got 'x'"),
    (SCHEDULERS.parse, "step-4-0.8-1", "at most 2 argument"),
    (SCHEDULERS.parse, "steplr-4", "unknown scheduler 'steplr'"),
    (SCHEDULERS.parse, "", "non-empty"),
])
def test_bad_specs_show_spec_valid_names_and_example(registry_parse, spec, fragment):
    with pytest.raises(SpecError) as info:
        registry_parse(spec)
    message = str(info.value)
    assert fragment in message and repr(spec) in message and "Valid:" in message and "Examples:" in message


def test_names_match_exactly_not_by_substring():
    with pytest.raises(SpecError):
        create_loss("CEV2")
    with pytest.raises(SpecError):
        create_optimizer("Adamish", tiny_model(), 0.1, 0.0)
    assert type(create_loss("ce")).__name__ == "CrossEntropyLoss"


@pytest.mark.parametrize("name,known", [("adopt", True), ("lookahead_adamw", True), ("foo_adam", False),
                                        ("xadam", False), ("lookahead_foo", False)])
def test_timm_optimizer_names_match_exactly(name, known):
    from easycls.optim.optimizers import is_timm_optimizer
    assert is_timm_optimizer(name) == known
