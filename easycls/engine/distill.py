"""Knowledge distillation (Hinton et al., 2015): a trained teacher's softened probabilities guide the student.

The teacher is any checkpoint this toolkit wrote with the same classes, in eval mode and without gradients. It
sees exactly the batch the student sees (after augmentation and mixing), brought to its own size, channels and
normalisation. The loss is ``(1 - alpha) * loss + alpha * T^2 * KL(teacher_T || student_T)``.
"""
import logging

import torch
import torch.nn.functional as F

from easycls.core.checkpoints import ModelMeta
from easycls.core.errors import ConfigError
from easycls.evaluation.predictor import InferenceModel, adapt_images

log = logging.getLogger(__name__)


class Distiller:
    """Adds the distillation term to a batch's loss: ``distiller(inputs, student_logits, loss)``."""

    def __init__(self, teacher: InferenceModel, student: ModelMeta, alpha: float, temperature: float):
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature
        device = teacher.device
        shape = (1, student.channels, 1, 1)
        self.mean = torch.tensor(student.mean, device=device).expand(student.channels).reshape(shape)
        self.std = torch.tensor(student.std, device=device).expand(student.channels).reshape(shape)
        teacher_meta = teacher.meta
        self.t_mean = torch.tensor(teacher_meta.mean, device=device).expand(teacher_meta.channels).reshape(1, -1, 1, 1)
        self.t_std = torch.tensor(teacher_meta.std, device=device).expand(teacher_meta.channels).reshape(1, -1, 1, 1)

    @torch.no_grad()
    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for the student's normalised input batch."""
        x = adapt_images(inputs.float() * self.std + self.mean, self.teacher.meta)  # [0, 1] at the teacher's input
        return self.teacher.net((x - self.t_mean) / self.t_std).float()

    def __call__(self, inputs: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        soft = F.log_softmax(self.teacher_logits(inputs) / t, dim=1)
        kd = F.kl_div(F.log_softmax(logits.float() / t, dim=1), soft, log_target=True, reduction="batchmean")
        return (1 - self.alpha) * loss + self.alpha * t * t * kd


def load_teacher(cfg: dict, student: ModelMeta, device: torch.device) -> Distiller:
    """The teacher at ``teacher_path`` on the student's ``device`` (under torchrun, each rank's own GPU); its
    classes must be the student's."""
    teacher = InferenceModel.from_checkpoint(cfg["teacher_path"], {**cfg, "TTA": False, "calibrate": False}, device)
    if teacher.meta.class_names != student.class_names:
        raise ConfigError(f"teacher {cfg['teacher_path']} has classes {teacher.meta.class_names} but the data has "
                          f"{student.class_names}")
    log.info("distilling from the teacher %s: %s, %s px, %d channel(s); alpha %.2f, temperature %.1f",
             cfg["teacher_path"], teacher.meta.model_name, "x".join(map(str, teacher.meta.img_size)),
             teacher.meta.channels, cfg["distill_alpha"], cfg["distill_temperature"])
    return Distiller(teacher, student, cfg["distill_alpha"], cfg["distill_temperature"])
