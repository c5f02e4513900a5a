"""configs/fashion_mnist.py with an exponential moving average of the weights (timm's ModelEmaV3).

    python train.py --config configs/fashion_mnist_ema.py

Everything but the keys below comes from the base file (``_base_`` is relative to this file; a list merges in
order, later files winning, and this file's own cfg wins over all of them). docs/benchmarks.md compares the two.
"""
_base_ = "fashion_mnist.py"

cfg = dict(
    ema=True,
    ema_decay=0.9998,
    save_dir="output/fashion_mnist_ema/",
)
