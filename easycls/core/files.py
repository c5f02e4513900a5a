"""The names of the files a run writes under ``save_dir``: one home, so that writers and readers agree."""
import json
import os

BEST = "best.pth"
BEST_SAFETENSORS = "best.safetensors"
LAST = "last.pth"
INTERRUPTED = "interrupted.pth"
RESULTS = "results.csv"
LOSS_PLOT = "loss.png"
ACC_PLOT = "acc.png"
LR_PLOT = "lr.png"
CONFIG_JSON = "config.json"
PROBE_RECORD = "model_probe"  # config.json of a budgeted run: the probe's figures, a record beside the keys
DATA_JSON = "data.json"
SPLIT = "split.csv"
DATA_PREVIEW = "data_preview.png"
REPORT = "report.html"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"
HEATMAPS_DIR = "heatmaps"
PREDICTIONS = "pre.csv"
EXPORTS = {"onnx": "model.onnx", "torchscript": "model.pt"}
LR_FIND_CSV = "lr_find.csv"
LR_FIND_PLOT = "lr_find.png"
LOGS = {"train": "train.log", "evaluate": "evaluate.log", "predict": "predict.log", "export": "export.log",
        "kfold": "kfold.log"}
TRAIN_OUTPUTS = (BEST, BEST_SAFETENSORS, LAST, RESULTS, LOSS_PLOT, ACC_PLOT, LR_PLOT, REPORT)


def epoch_snapshot(epoch: int) -> str:
    """``epoch_NNN.pth`` for the 0-based ``epoch`` (kept when ``save_best_only=False``)."""
    return f"epoch_{epoch + 1:03d}.pth"


def best_snapshot(epoch: int, value: float) -> str:
    """``best_eNNN_<metric>.pth`` (kept for every improvement when ``save_one_only=False``)."""
    return f"best_e{epoch + 1:03d}_{value:.4f}.pth"


def out(cfg: dict, name: str) -> str:
    """``name`` under the config's ``save_dir``."""
    return os.path.join(cfg["save_dir"], name)


def plain(cfg: dict) -> dict:
    """``cfg`` as plain JSON values (a Hook instance becomes its class name), safe for checkpoints and JSON."""
    return json.loads(json.dumps(cfg, default=lambda obj: type(obj).__name__))
