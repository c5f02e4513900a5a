"""``model_name='auto'``: the candidates a time budget chooses among, and its rule.

The candidates learn well from scratch at small sizes (28-64 px) and span a range of cost per image: a throughput
probe on the run's own data ranks them on the machine at hand (``easycls.engine.probe``), and the run trains the
largest one (by parameters) that still gets ``MIN_PASSES`` passes over the training set in the budget.
"""
from typing import Tuple

AUTO = "auto"
AUTO_CANDIDATES: Tuple[str, ...] = (
    "resnet10t_small",        # 1.2M parameters: resnet10t at half width, no stem max-pool (easycls.models.small)
    "mobilenetv3_small_100",  # 1.5M
    "mobilenetv3_large_100",  # 4.2M
    "resnet10t",              # 4.9M: the default model
    "resnet18",               # 11.2M: a larger ResNet, two blocks a stage
)
# Passes over the training data a model must get in the budget to be chosen. A rule of thumb (docs/budget.md): the
# from-scratch recipes of docs/benchmarks.md still gain 1-2 points of accuracy from epoch 4 to epoch 8 and more.
MIN_PASSES = 8
