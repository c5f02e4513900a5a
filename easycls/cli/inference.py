"""The evaluate, predict and export commands behind ``evaluate.py``, ``predict.py`` and ``export.py``."""
import logging
import logging.handlers
import os
import time

import pandas as pd

from easycls.cli.common import _run, setup_logging, start_log_file
from easycls.core import files
from easycls.core.errors import ConfigError, DataError
from easycls.data.labels import read_label_csv
from easycls.data.scan import scan_labelled, scan_unlabelled
from easycls.evaluation.calibration import calibration_report
from easycls.evaluation.metrics import format_report
from easycls.evaluation.outputs import (
    evaluation_heatmaps,
    write_errors,
    write_eval_outputs,
    write_heatmaps,
    write_predictions,
)
from easycls.evaluation.plots import plot_reliability
from easycls.evaluation.predictor import InferenceModel, checkpoint_path, inference_loader, load_predictor

log = logging.getLogger("easycls")



# ----------------------------------------------------------------------------- evaluate
def evaluation_samples(cfg: dict, classes):
    """The labelled images to score and where they are: class folders under eval_path (or test_path); with
    label_type='CSV', label_path's rows under eval_path, or else the val rows of save_dir/split.csv."""
    if cfg["label_type"] == "CSV":
        if cfg["eval_path"]:
            return read_label_csv(cfg["label_path"], cfg["eval_path"], classes)[0], cfg["eval_path"]
        saved = files.out(cfg, files.SPLIT)
        if not os.path.isfile(saved):
            raise ConfigError(f"label_type='CSV' without eval_path scores the val rows of {saved}, which does not "
                              f"exist; train first or set eval_path")
        samples, split = read_label_csv(saved, cfg["train_path"], classes)
        return samples.subset([i for i, s in enumerate(split) if s == "val"]), f"{saved} (val rows)"
    path = cfg["eval_path"] or cfg["test_path"]
    try:
        return scan_labelled(path, classes), path
    except DataError as exc:
        raise DataError(f"{exc}. evaluate needs a labelled class-folder dataset: set eval_path") from None


def evaluate(cfg: dict) -> int:
    setup_logging()
    model = load_predictor(cfg)
    samples, path = evaluation_samples(cfg, model.meta.class_names)
    start_log_file(cfg["save_dir"], files.LOGS["evaluate"])
    started = time.time()
    result = model.evaluate(inference_loader(samples, model, cfg))
    metrics = {**result["metrics"], **calibration_report(result["probs"], result["labels"], model.temperature,
                                                         cfg["reject_threshold"]),
               "path": path, "seconds": round(time.time() - started, 3)}
    out = files.out(cfg, files.EVAL_DIR)
    write_eval_outputs(metrics, model.meta.class_names, out, cfg["cm_normalize"])
    write_errors(samples, result, model.meta.class_names, os.path.join(out, "errors.csv"))
    plot_reliability(result["probs"], result["labels"], model.temperature, os.path.join(out, "reliability.png"))
    if cfg["show_heatmap"]:
        evaluation_heatmaps(model, samples, result, path, cfg)
    print(f"evaluated {path}")
    print(format_report(metrics))
    print(f"wrote {out}/metrics.json, per_class.csv, confusion_matrix.csv, confusion_matrix.png, reliability.png "
          f"and errors.csv")
    from easycls.evaluation.report import write_report
    print(f"updated {write_report(cfg['save_dir'])}")
    return 0


def evaluate_main(argv=None) -> int:
    """``python evaluate.py``: accuracy, F1 and a confusion matrix on a labelled folder."""
    return _run(evaluate, argv, "evaluate.py", "Score a checkpoint on a labelled class-folder dataset.")


# ----------------------------------------------------------------------------- predict
def predict(cfg: dict) -> int:
    setup_logging()
    model = load_predictor(cfg)
    samples, others = scan_unlabelled(cfg["test_path"])
    start_log_file(cfg["save_dir"], files.LOGS["predict"])
    out_path = files.out(cfg, files.PREDICTIONS)
    written, failed = write_predictions(model, samples, cfg, out_path)
    print(f"wrote {written} rows to {out_path} ({failed} unreadable, {len(others)} non-image files skipped)")
    if cfg["show_heatmap"]:
        from easycls.evaluation.heatmaps import flat_name
        first = pd.read_csv(out_path, nrows=cfg["heatmap_max"], keep_default_na=False)
        picks = [(i, int(row.label), f"{i:03d}_{row.class_name}_{flat_name(row.image_id)}")
                 for i, row in enumerate(first.itertuples()) if row.label != ""]
        write_heatmaps(model, samples, picks, cfg, replaces=("[0-9][0-9][0-9]_*",))
    return 0


def predict_main(argv=None) -> int:
    """``python predict.py``: write ``pre.csv`` with a label for every image under ``test_path``."""
    return _run(predict, argv, "predict.py", "Label every image under test_path; write save_dir/pre.csv.")


# ----------------------------------------------------------------------------- export
def export(cfg: dict) -> int:
    from easycls.evaluation.export import export as export_model  # imports torch.onnx only when exporting
    setup_logging()
    if isinstance(cfg["model_path"], list):
        raise ConfigError("export takes one checkpoint as model_path, not a list")
    path = checkpoint_path(cfg)
    if not path.endswith((".pth", ".safetensors")):
        raise ConfigError(f"export needs a checkpoint (.pth or .safetensors), got model_path={path}")
    model = InferenceModel.from_checkpoint(path, {**cfg, "GPU_ID": "cpu", "amp": "off", "TTA": False})
    start_log_file(cfg["save_dir"], files.LOGS["export"])
    export_model(model, cfg)  # logs each file with its parity figure
    return 0


def export_main(argv=None) -> int:
    """``python export.py``: write ONNX and/or TorchScript files that run without easycls."""
    return _run(export, argv, "export.py", "Export a checkpoint to ONNX and/or TorchScript, with a parity check.")
