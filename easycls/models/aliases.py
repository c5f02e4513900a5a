"""The seed's short model names and the timm or torchvision names they stand for.

A module of its own, without timm: evaluate and predict compare a config's model_name with an exported model's
without importing timm.
"""
MODEL_ALIASES = {
    "mobilenetv3": "mobilenetv3_large_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
    "mobilenetv2": "mobilenetv2_100",
    "shufflenetv2": "tv:shufflenet_v2_x1_0",
    "se_resnext50_32x4d": "seresnext50_32x4d",
    "xception": "legacy_xception",
    **{f"efficientnet-b{i}": f"efficientnet_b{i}" for i in range(8)},
    **{f"adv-efficientnet-b{i}": f"tf_efficientnet_b{i}.ap_in1k" for i in range(9)},
}
