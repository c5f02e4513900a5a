"""use_distill: a teacher checkpoint of another architecture, size and channel count guides a student."""
import os

import pandas as pd
import pytest
import torch
from conftest import cfg_overrides, tiny_cfg, write_images

from easycls.cli.train import train_main


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from conftest import make_tiny_data
    root = tmp_path_factory.mktemp("teacher")
    data = make_tiny_data(root)
    cfg = tiny_cfg(data, root / "teacher", model_name="test_efficientnet", channels=3, target_img_size=[20, 20],
                   epochs=3)
    assert train_main(cfg_overrides(cfg)) == 0
    return data, str(root / "teacher" / "best.pth")


def test_a_student_trains_from_a_teacher_and_the_log_names_it(teacher, tmp_path, capsys):
    data, path = teacher
    plain = tiny_cfg(data, tmp_path / "plain", epochs=2)
    assert train_main(cfg_overrides(plain)) == 0
    capsys.readouterr()
    taught = {**plain, "save_dir": str(tmp_path / "taught"), "use_distill": 1, "teacher_path": path,
              "distill_alpha": 0.7, "distill_temperature": 2.0}
    assert train_main(cfg_overrides(taught)) == 0
    out = capsys.readouterr().out
    assert f"distilling from the teacher {path}: test_efficientnet, 20x20 px, 3 channel(s)" in out
    a, b = (pd.read_csv(tmp_path / name / "results.csv")["train_loss"] for name in ("plain", "taught"))
    assert not a.equals(b) and b.notna().all()


def test_the_distillation_term_is_zero_when_student_and_teacher_agree():
    from easycls.core.checkpoints import ModelMeta
    from easycls.data.loaders import Preprocessor
    from easycls.engine.distill import Distiller
    from easycls.evaluation.predictor import InferenceModel
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    meta = ModelMeta("linear", ["a", "b", "c"], [4, 4], 1, [0.5], [0.25])
    teacher = InferenceModel(net, meta, Preprocessor(meta.mean, meta.std, 1, torch.device("cpu")))
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
