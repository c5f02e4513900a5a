"""fp16 autocast with a GradScaler, the AMP path amp='auto' takes on CUDA, checked on the CPU: torch autocasts to
float16 there too, and GradientStep builds an enabled GradScaler for float16 on any device. bf16 never gets one."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from easycls.core.device import resolve_amp
from easycls.engine.step import GradientStep

CPU = torch.device("cpu")


def batch():
    torch.manual_seed(0)
    return (nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0]))


def loud(logits, target):
    """Cross-entropy times 1000: its gradient, times the initial scale 2^16, overflows float16 (max 65504)."""
    return F.cross_entropy(logits, target) * 1e3


def weights(net):
    return [p.detach().clone() for p in net.parameters()]


def test_an_overflowing_fp16_gradient_skips_steps_and_halves_the_scale_until_it_fits():
    net, x, y = batch()
    lr = 1e-4
    step = GradientStep(torch.optim.SGD(net.parameters(), lr=lr), loud, CPU, amp_dtype=torch.float16)
    assert step.scaler.is_enabled() and step.scaler.get_scale() == 2.0 ** 16
    start = weights(net)
    scales = []
    while all(torch.equal(a, b) for a, b in zip(start, net.parameters())) and len(scales) < 20:
        out = step(net, x, y)
        scales.append(step.scaler.get_scale())
    assert out["logits"].dtype == torch.float16  # the forward pass really ran in float16
    # every overflow skipped the step and halved the scale; the first step that fit kept it
    assert len(scales) >= 2 and scales == [2.0 ** (15 - k) for k in range(len(scales) - 1)] + [scales[-2]]
    # that step applied the unscaled gradient: the float32 gradient, to float16's precision
    reference, _, _ = batch()
    loud(reference(x), y).backward()
    for before, after, p in zip(start, net.parameters(), reference.parameters()):
        assert torch.allclose((before - after) / lr, p.grad, rtol=1e-2, atol=1e-2)


def test_fp16_clipping_acts_on_the_unscaled_gradient():
    """backward -> unscale_ -> clip -> step: the update's norm is lr x clip. Clipping the scaled gradient would
    leave an update 2^16 times smaller."""
    net, x, y = batch()
    lr, clip = 0.1, 0.01
    step = GradientStep(torch.optim.SGD(net.parameters(), lr=lr), nn.CrossEntropyLoss(), CPU,
                        amp_dtype=torch.float16, clip=clip)
    start = weights(net)
    step(net, x, y)
    update = torch.cat([(a - b.detach()).flatten() for a, b in zip(start, net.parameters())])
    assert float(update.norm()) / lr == pytest.approx(clip, rel=1e-3)
    assert step.scaler.get_scale() == 2.0 ** 16  # nothing overflowed


@pytest.mark.parametrize("amp,device,dtype,scaler", [
    ("fp16", "cuda", torch.float16, True),
    ("bf16", "cuda", torch.bfloat16, False), ("bf16", "cpu", torch.bfloat16, False),
    ("auto", "cpu", None, False), ("fp16", "cpu", None, False), ("off", "cuda", None, False)])
def test_only_float16_gets_a_gradscaler(amp, device, dtype, scaler):
    """The combinations the product builds: bf16 (float32's range) never gets a GradScaler."""
    assert resolve_amp(amp, torch.device(device)) == dtype
    net, _, _ = batch()
    step = GradientStep(torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(), CPU, amp_dtype=dtype)
    assert step.scaler.is_enabled() == scaler
