"""The evaluate, predict and export commands behind ``evaluate.py``, ``predict.py`` and ``export.py``."""
import os

from easycls import api
from easycls.cli.common import run
from easycls.config import make_config
from easycls.core import files


def evaluate(config, overrides: dict) -> int:
    metrics = api.evaluate(config, progress=True, **overrides)  # logs the scores (console and evaluate.log)
    save_dir = make_config(config, overrides)["save_dir"]
    out = os.path.join(save_dir, files.EVAL_DIR)
    written = "pr_curves.png" if metrics.get("multi_label") else \
        "confusion_matrix.csv, confusion_matrix.png, reliability.png"
    print(f"wrote {out}/metrics.json, per_class.csv, {written} and errors.csv")
    print(f"updated {os.path.join(save_dir, files.REPORT)}")
    return 0


def evaluate_main(argv=None) -> int:
    """``python evaluate.py``: accuracy, F1 and a confusion matrix on a labelled folder."""
    return run(evaluate, argv, "evaluate.py", "Score a checkpoint on a labelled class-folder dataset.")


def predict(config, overrides: dict) -> int:
    out_path = files.out(make_config(config, overrides), files.PREDICTIONS)
    frame = api.predict(config, output=out_path, progress=True, **overrides)
    failed = int(frame["status"].astype(str).str.startswith("error").sum())
    print(f"wrote {len(frame)} rows to {out_path} ({failed} unreadable)")
    return 0


def predict_main(argv=None) -> int:
    """``python predict.py``: write ``pre.csv`` with a label for every image under ``test_path``."""
    return run(predict, argv, "predict.py", "Label every image under test_path (a folder, or one image file); write "
                                            "save_dir/pre.csv.")


def export(config, overrides: dict) -> int:
    api.export(config, **overrides)  # logs each file with its parity figure
    return 0


def export_main(argv=None) -> int:
    """``python export.py``: write ONNX and/or TorchScript files that run without easycls."""
    return run(export, argv, "export.py", "Export a checkpoint to ONNX and/or TorchScript, with a parity check.")
