"""use_distill: the student trains on ``(1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T)``, with a teacher
of another architecture, size and channel count, and the term's gradient pulls the student towards the teacher."""
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import cfg_overrides, make_tiny_data, tiny_cfg, write_images

from easycls import Hook, register_hook
from easycls.cli.train import train_main
from easycls.core.checkpoints import ModelMeta, load_checkpoint, split_checkpoint
from easycls.data.loaders import Preprocessor
from easycls.engine.distill import Distiller
from easycls.engine.hooks.base import HOOKS
from easycls.evaluation.predictor import InferenceModel
from easycls.models.factory import create_model


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A one-epoch teacher: test_efficientnet on 20x20 RGB, where the students are test_resnet on 16x16 grey."""
    root = tmp_path_factory.mktemp("teacher")
    data = make_tiny_data(root)
    cfg = tiny_cfg(data, root / "teacher", model_name="test_efficientnet", channels=3, target_img_size=[20, 20],
                   epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    return data, str(root / "teacher" / "best.pth")


class FirstBatch(Hook):
    """Keeps the run's first training batch as the step saw it (inputs, logits, labels) and the loss it returned."""

    seen: dict = {}

    def after_train_iter(self, runner, batch_idx, batch, outputs):
        if not FirstBatch.seen:
            FirstBatch.seen.update({k: outputs[k].detach().clone() for k in ("inputs", "logits", "labels", "loss")},
                                   meta=runner.meta)


@pytest.fixture
def first_batch():
    FirstBatch.seen = {}
    register_hook(FirstBatch)
    yield FirstBatch.seen
    HOOKS.pop("FirstBatch")


def teacher_logits_by_hand(path: str, inputs: torch.Tensor, student: ModelMeta) -> torch.Tensor:
    """The teacher's logits for the student's normalised batch, written out: back to [0, 1] pixels, grey to RGB,
    an antialiased resize to the teacher's size, the teacher's normalisation, its network in eval mode."""
    weights, meta = split_checkpoint(load_checkpoint(path), path)
    net = create_model(meta.model_name, len(meta.class_names), meta.channels)
    net.load_state_dict(weights)
    pixels = inputs * torch.tensor(student.std).reshape(1, -1, 1, 1) + torch.tensor(student.mean).reshape(1, -1, 1, 1)
    pixels = F.interpolate(pixels.expand(-1, 3, -1, -1), size=tuple(meta.img_size), mode="bilinear", antialias=True,
                           align_corners=False)
    mean, std = (torch.tensor(v).expand(3).reshape(1, 3, 1, 1) for v in (meta.mean, meta.std))
    with torch.no_grad():
        return net.eval()((pixels - mean) / std)


def kl_by_hand(teacher_logits, student_logits, t):
    p = (teacher_logits / t).softmax(1)
    return (p * (p.log() - (student_logits / t).log_softmax(1))).sum(1).mean()


def test_the_student_trains_on_the_distillation_loss_computed_by_hand(teacher, first_batch, tmp_path, capsys):
    data, path = teacher
    cfg = tiny_cfg(data, tmp_path / "taught", epochs=1, use_distill=1, teacher_path=path, distill_alpha=0.7,
                   distill_temperature=2.0, custom_hooks=["FirstBatch"])
    assert train_main(cfg_overrides(cfg)) == 0
    assert f"distilling from the teacher {path}: test_efficientnet, 20x20 px, 3 channel(s); alpha 0.70, " \
           f"temperature 2.0" in capsys.readouterr().out
    seen = first_batch
    assert seen["inputs"].shape[1:] == (1, 16, 16)  # the student's own input; the teacher saw it at 20x20 RGB
    kl = kl_by_hand(teacher_logits_by_hand(path, seen["inputs"], seen["meta"]), seen["logits"], 2.0)
    ce = F.cross_entropy(seen["logits"], seen["labels"])
    assert float(kl) > 0.01  # the two networks disagree: the term has something to add
    assert float(seen["loss"]) == pytest.approx(float(0.3 * ce + 0.7 * 2.0 ** 2 * kl), rel=1e-5)


def linear_teacher():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    meta = ModelMeta("linear", ["a", "b", "c"], [4, 4], 1, [0.5], [0.25])
    return net.eval(), meta, InferenceModel(net, meta, Preprocessor(meta.mean, meta.std, 1, torch.device("cpu")))


@pytest.mark.parametrize("alpha,t", [(1.0, 1.0), (0.5, 4.0), (0.25, 2.0)])
def test_the_term_pulls_the_student_towards_the_teacher_with_the_t_squared_size(alpha, t):
    """d/ds [alpha T^2 KL(p_T || softmax(s / T))] = alpha T (softmax(s / T) - p_T) / batch: the sign points from the
    teacher to the student, and T^2 keeps the gradient's size comparable across temperatures (Hinton et al.)."""
    torch.manual_seed(0)
    net, meta, teacher = linear_teacher()
    x = torch.randn(6, 1, 4, 4)
    with torch.no_grad():
        target = (net(x) / t).softmax(1)
    student = torch.randn(6, 3, requires_grad=True)
    ce = F.cross_entropy(student, torch.tensor([0, 1, 2, 0, 1, 2]))
    ce_grad, = torch.autograd.grad(ce, student, retain_graph=True)
    grad, = torch.autograd.grad(Distiller(teacher, meta, alpha, t)(x, student, ce), student)
    expected = (1 - alpha) * ce_grad + alpha * t * ((student / t).softmax(1) - target) / len(x)
    assert torch.allclose(grad, expected, atol=1e-6)
    kd_grad, = torch.autograd.grad(Distiller(teacher, meta, 1.0, t)(x, student, torch.tensor(0.0)), student)
    with torch.no_grad():
        kd = [float(Distiller(teacher, meta, 1.0, t)(x, s, torch.tensor(0.0)))
              for s in (student - kd_grad, student, student + kd_grad)]
    assert kd[0] < kd[1] < kd[2]  # a descent step brings the student nearer the teacher


def test_the_term_is_zero_when_student_and_teacher_agree():
    net, meta, teacher = linear_teacher()
    x = torch.randn(6, 1, 4, 4)
    logits, loss = net(x).detach(), torch.tensor(1.5)
    assert float(Distiller(teacher, meta, 0.0, 4.0)(x, logits, loss)) == pytest.approx(1.5)
    assert float(Distiller(teacher, meta, 1.0, 4.0)(x, logits, loss)) == pytest.approx(0.0, abs=1e-6)


def test_a_missing_teacher_or_other_classes_fail_in_one_line(teacher, tmp_path, capsys):
    data, path = teacher
    cfg = tiny_cfg(data, tmp_path / "never", use_distill=1, teacher_path=str(tmp_path / "gone.pth"))
    assert train_main(cfg_overrides(cfg)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: use_distill=1 needs teacher_path, a checkpoint this toolkit wrote; not found: " \
                  f"{str(tmp_path / 'gone.pth')!r}"
    assert not os.path.exists(tmp_path / "never")
    other = tmp_path / "other"
    for split in ("train", "val"):
        write_images(str(other / split), classes=["left", "middle", "up"], per_class=6)
    assert train_main(cfg_overrides(tiny_cfg(other, tmp_path / "o", use_distill=1, teacher_path=path))) == 2
    assert "has classes ['left', 'middle', 'right'] but the data has ['left', 'middle', 'up']" in \
        capsys.readouterr().err
