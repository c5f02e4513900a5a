"""A ResNet for small images (28-64 px), registered with timm as ``resnet10t_small``.

timm's ResNets shrink the input 4x before their first stage (a stride-2 stem, then a max-pool), as 224 px
ImageNet images need; at 28 px that leaves 7x7 for the first stage and 1x1 for the last, where a 3x3
convolution sees mostly padding. ``resnet10t_small`` is timm's ResNet with resnet10t's layout (one BasicBlock a
stage, the three-convolution stem, average-pool shortcuts) without the stem max-pool, so every stage sees twice
the resolution, and at half the width, so a step costs less than resnet10t's (docs/benchmarks.md: Fashion-MNIST).
Registering it with timm lets everything that builds a model by name (training, checkpoints, evaluate, predict,
export, ensembles) find it.
"""
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet

__all__ = ["SmallInputResNet"]


class SmallInputResNet(ResNet):
    """timm's ResNet without the stem max-pool: its stages run at 1/2 ... 1/16 of the input, not 1/4 ... 1/32."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.maxpool = nn.Identity()
        for info in self.feature_info[1:]:
            info["reduction"] //= 2


default_cfgs = generate_default_cfgs({"resnet10t_small": dict(
    num_classes=1000, input_size=(3, 32, 32), pool_size=(2, 2), mean=IMAGENET_DEFAULT_MEAN,
    std=IMAGENET_DEFAULT_STD, first_conv="conv1.0", classifier="fc")})


@register_model
def resnet10t_small(pretrained: bool = False, **kwargs) -> SmallInputResNet:
    """resnet10t at half width (stages of 32, 64, 128 and 256 channels) without the stem max-pool; no weights."""
    if pretrained:
        raise RuntimeError("resnet10t_small has no pretrained weights; train it from scratch (pretrained=None)")
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=16,
                stem_type="deep_tiered", avg_down=True)
    return build_model_with_cfg(SmallInputResNet, "resnet10t_small", pretrained, **dict(args, **kwargs))
