"""The command line: ``train.py``, ``evaluate.py``, ``predict.py``, ``export.py`` and the console scripts."""
from easycls.cli.inference import evaluate_main, export_main, predict_main
from easycls.cli.train import train_main

__all__ = ["evaluate_main", "export_main", "predict_main", "train_main"]
