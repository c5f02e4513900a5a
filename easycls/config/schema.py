"""Every config key: its default, a predicate on values and the allowed values in words."""
import re
from dataclasses import dataclass
from typing import Callable, Dict

from easycls.core.clock import DURATION_HELP, parse_duration
from easycls.core.errors import SpecError
from easycls.engine.tracking import MONITORS


@dataclass(frozen=True)
class Key:
    """A config key: its default, a predicate on values, and the allowed values in words."""

    default: object
    ok: Callable[[object], bool]
    allowed: str


def _is(*types):
    return lambda v: isinstance(v, types) and not (bool not in types and isinstance(v, bool))


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _choice(*values):
    return lambda v: v in values


def _size(v):
    if isinstance(v, int) and not isinstance(v, bool):
        return v > 0
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)


def _floats_or_none(v):
    return v is None or (isinstance(v, (list, tuple)) and len(v) > 0 and all(_num(x) for x in v))


def _str_list(v):
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def _gpu_id(v):
    """'0', '1', ... or 'cpu' ('' is '0'); a list such as '0,1' passes here so that preflight can point to
    torchrun."""
    return isinstance(v, str) and re.fullmatch(r"\s*(cpu|\d+(\s*,\s*\d+)*)?\s*", v, re.IGNORECASE) is not None


def _int_ge(low):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _float_in(low, high, high_open=True):
    return lambda v: _num(v) and low <= v and (v < high if high_open else v <= high)


def _spec(kind):
    def check(v):
        from easycls.optim import losses, optimizers, schedulers  # late import: start-up time (timm)
        registry = {"loss": losses.LOSSES, "optimizer": optimizers.OPTIMIZERS, "scheduler": schedulers.SCHEDULERS}[kind]
        try:
            registry.parse(v)  # raises SpecError with the valid names and an example
        except SpecError:
            if not (kind == "optimizer" and isinstance(v, str) and optimizers.is_timm_optimizer(v)):  # imports timm
                raise
        return True
    return check


def _duration(v):
    try:
        parse_duration(v)
    except ValueError:
        return False
    return True


def _hooks(v):
    from easycls.engine.hooks import check_custom_hooks  # late import: start-up time (torch, the hook modules)
    if not isinstance(v, (list, tuple)):
        return False
    check_custom_hooks(v)  # raises ConfigError naming the registered hooks
    return True

BOOL = "True or False"

SCHEMA: Dict[str, Key] = {
    # global
    "model_name": Key("resnet10t", _is(str), "a timm model name, 'tv:<torchvision name>', an alias, or 'auto' "
                                            "(with time_budget: the largest candidate that fits the budget)"),
    "GPU_ID": Key("0", _gpu_id, "a CUDA device index such as '0' (or 0), or 'cpu'"),
    "class_number": Key(None, lambda v: v is None or _int_ge(2)(v),
                        "None (the number of class folders in train_path, or of labels in label_path) or an integer "
                        ">= 2, which is then checked against them"),
    "class_names": Key([], _str_list, "a list of class folder names, or [] to use every folder"),
    "random_seed": Key(42, _int_ge(0), "an integer >= 0"),
    "cfg_verbose": Key(True, _is(bool), BOOL),
    "num_workers": Key(2, _int_ge(0), "an integer >= 0"),
    # data
    "train_path": Key("data/digits/train", _is(str), "a folder with one sub-folder per class"),
    "val_path": Key("data/digits/val", _is(str), "a folder with one sub-folder per class, or '' to use k_fold"),
    "test_path": Key("data/digits/test", _is(str), "a folder of images (sub-folders allowed)"),
    "eval_path": Key("", _is(str), "a labelled class-folder dataset, or '' to use test_path"),
    "k_fold": Key(5, _int_ge(2), "an integer >= 2: the folds when val_path is ''"),
    "val_fold": Key(None, lambda v: v is None or _int_ge(0)(v),
                    "None (train every fold from start_fold) or an integer in [0, k_fold) (that fold only)"),
    "start_fold": Key(0, _int_ge(0), "an integer in [0, k_fold): the first fold to train when val_path is ''"),
    "target_img_size": Key([32, 32], _size, "[height, width] or one integer, in pixels"),
    "channels": Key(1, _choice(1, 3), "1 (grayscale) or 3 (RGB)"),
    "mean": Key(None, _floats_or_none, "None (from the model) or a list of floats, one per channel"),
    "std": Key(None, _floats_or_none, "None (from the model) or a list of floats, one per channel"),
    "augment": Key("light", _choice("none", "shift", "light", "strong", "randaugment", "trivialaugment"),
                   "'none', 'shift', 'light', 'strong', 'randaugment' or 'trivialaugment'"),
    "random_erasing": Key(0.0, _float_in(0, 1, high_open=False),
                          "a float in [0, 1]: the chance each training image gets a random rectangle erased"),
    "hflip": Key(False, _is(bool), BOOL),
    "show_data": Key(False, _is(bool), BOOL + " (save_dir/data_preview.png: the first training batch as trained on)"),
    "mixup": Key(False, lambda v: isinstance(v, bool) or (_num(v) and v > 0),
                 "False, True (alpha 0.8) or an alpha > 0"),
    "cutmix": Key(False, lambda v: isinstance(v, bool) or (_num(v) and v > 0),
                  "False, True (alpha 1.0) or an alpha > 0"),
    "mixup_prob": Key(1.0, _float_in(0, 1, high_open=False), "a float in [0, 1]: the share of batches mixed"),
    "mixup_switch_prob": Key(0.5, _float_in(0, 1, high_open=False),
                             "a float in [0, 1]: with both on, the chance a batch uses cutmix instead of mixup"),
    "try_to_train_items": Key(0, _int_ge(0), "0 (all images) or a positive number of images"),
    "cache": Key("auto", _choice("auto", "ram", "none"), "'auto', 'ram' or 'none'"),
    "cache_mb": Key(4096, _int_ge(1), "a positive number of megabytes"),
    "audit": Key(False, _is(bool), BOOL),
    "label_type": Key("DIR", _choice("DIR", "CSV"), "'DIR' (one sub-folder per class) or 'CSV' (label_path)"),
    "label_path": Key("", _is(str), "'' or a CSV file of image_id,label[,split], or multi-label image_id,labels"
                                    "[,split] (names joined by a vertical bar) or image_id then one 0/1 column per "
                                    "class"),
    "multi_label": Key(None, lambda v: v is None or isinstance(v, bool),
                       "None (as label_path's form says), True (several labels per image, also from a label column) "
                       "or False"),
    "val_fraction": Key(0.1, _float_in(0, 1), "a float in [0, 1): the share held out as val from a labels CSV "
                                              "without a split column, when val_path is '', or from each k-fold "
                                              "fold's training images to choose its checkpoint; 0 with a labels "
                                              "CSV: k_fold-fold cross-validation over it instead"),
    # model
    "pretrained": Key("", lambda v: isinstance(v, (bool, str)),
                      "'' (none), True (the model's hub weights), 'hf-hub:org/name', a torchvision weights name such "
                      "as 'IMAGENET1K_V1' (tv: models) or a path to a .pth, .pt or .safetensors file"),
    "pretrained_key_map": Key({}, _is(dict), "a dict of {regex: replacement} applied to pretrained keys"),
    "dropout": Key(0.0, _float_in(0, 1), "a float in [0, 1)"),
    "freeze_nonlinear_epoch": Key(0, _int_ge(0), "an integer >= 0"),
    "sync_bn": Key(False, _is(bool), BOOL),
    # training
    "learning_rate": Key(0.002, lambda v: _num(v) and v > 0, "a number > 0"),
    "batch_size": Key(64, _int_ge(1), "an integer >= 1"),
    "epochs": Key(30, _int_ge(1), "an integer >= 1"),
    "time_budget": Key(0, _duration, DURATION_HELP + ": the whole train.py process, the LR schedule planned "
                                     "to end with it"),
    "budget_warmup": Key(0.05, _float_in(0, 0.5, high_open=False),
                         "a float in [0, 0.5]: with time_budget, the share of the training time spent warming up "
                         "the learning rate (instead of warmup_epoch)"),
    "optimizer": Key("AdamW", _spec("optimizer"), "an optimizer spec"),
    "weight_decay": Key(0.01, lambda v: _num(v) and v >= 0, "a number >= 0"),
    "scheduler": Key("cosine", _spec("scheduler"), "a scheduler spec"),
    "warmup_epoch": Key(0, _int_ge(0), "an integer >= 0"),
    "loss": Key("CE", _spec("loss"), "a loss spec"),
    "use_distill": Key(0, lambda v: v in (0, 1), "0 or 1 (True or False): distil from teacher_path"),
    "teacher_path": Key("", _is(str), "'' or a checkpoint this toolkit wrote, same classes, any architecture"),
    "distill_alpha": Key(0.5, _float_in(0, 1, high_open=False), "a float in [0, 1]: the weight of the teacher's term"),
    "distill_temperature": Key(4.0, lambda v: _num(v) and v > 0, "a number > 0: the softening temperature"),
    "label_smooth": Key(0.0, _float_in(0, 1), "a float in [0, 1)"),
    "class_weight": Key(None, lambda v: v == "balanced" or _floats_or_none(v),
                        "None, 'balanced' (n / (classes x count)) or a list of class_number floats"),
    "sample_weights": Key(None, lambda v: v is None or isinstance(v, str),
                          "None, 'balanced' (each class drawn equally often) or a CSV of image_id,weight"),
    "clip_gradient": Key(0, lambda v: _num(v) and v >= 0, "0 (off) or a max gradient norm > 0"),
    "accumulate_steps": Key(1, _int_ge(1), "an integer >= 1 (batches per optimizer step)"),
    "ema": Key(False, _is(bool), BOOL),
    "ema_decay": Key(0.9998, lambda v: _num(v) and 0 < v < 1, "a float in (0, 1), such as 0.9998"),
    "early_stop_patience": Key(7, _int_ge(0), "0 (off) or a number of epochs"),
    "monitor": Key("auto", _choice("auto", *MONITORS), "'auto' (val_mAP for multi-label data, else val_acc) or "
                                                       "one of " + ", ".join(MONITORS)),
    "metrics": Key(["acc"], lambda v: _str_list(v) and set(v) <= {"acc", "F1"}, "a list from ['acc', 'F1']"),
    "amp": Key("auto", _choice("auto", "fp16", "bf16", "off"), "'auto', 'fp16', 'bf16' or 'off'"),
    "channels_last": Key(True, _is(bool), BOOL),
    "compile": Key(False, _is(bool), BOOL),
    "custom_hooks": Key([], _hooks, "a list of registered hook names (easycls.list_hooks()), "
                                    "dict(type=name, **kwargs) or Hook instances"),
    "tensorboard": Key(False, _is(bool), BOOL + ' (needs pip install -e ".[tensorboard]")'),
    "lr_find": Key(False, _is(bool), BOOL + " (True: a learning-rate range test instead of training)"),
    "resume": Key(False, lambda v: isinstance(v, (bool, str)), "False, True (save_dir/last.pth) or a path"),
    # outputs, evaluation and prediction
    "save_dir": Key("output/", _is(str), "a folder path"),
    "save_best_only": Key(True, _is(bool), BOOL),
    "save_one_only": Key(True, _is(bool), BOOL),
    "model_path": Key("", lambda v: isinstance(v, str) or (isinstance(v, list) and len(v) > 0 and _str_list(v)),
                      "'' (save_dir/best.pth), a checkpoint (.pth, .safetensors), or for evaluate and predict an "
                      "exported .onnx or TorchScript .pt, or a list of them (an ensemble)"),
    "export_format": Key("onnx", _choice("onnx", "torchscript", "all"), "'onnx', 'torchscript' or 'all'"),
    "test_batch_size": Key(256, _int_ge(1), "an integer >= 1"),
    "TTA": Key(False, _is(bool), BOOL),
    "show_heatmap": Key(False, _is(bool),
                        BOOL + ' (Grad-CAM overlays in save_dir/heatmaps; pip install -e ".[gradcam]")'),
    "heatmap_max": Key(32, _int_ge(1), "an integer >= 1: misclassified images (evaluate) or first images (predict)"),
    "heatmap_layer": Key("", _is(str), "'' (the last convolutional stage) or a module name such as 'layer3'"),
    "heatmap_class": Key("", _is(str), "'' (the predicted class; multi-label: the surest wrong or most probable "
                                       "label) or a class name, which every overlay shows"),
    "merge": Key(False, _is(bool), BOOL + " (True: evaluate and predict with every save_dir/fold*/best.pth)"),
    "calibrate": Key(True, _is(bool), BOOL + " (fit a temperature on val; evaluate and predict apply it)"),
    "threshold": Key("tuned", lambda v: v == "tuned" or (_float_in(0, 1)(v) and v > 0),
                     "'tuned' (multi-label: each class's threshold, tuned on val) or a float in (0, 1): one "
                     "threshold for every class"),
    "reject_threshold": Key(0.0, _float_in(0, 1), "0 (off) or a float in (0, 1): a lower top probability is "
                                                  "marked 'rejected'"),
    "save_probs": Key(False, _is(bool), BOOL),
    "cm_normalize": Key(False, _is(bool), BOOL),
}


def defaults() -> dict:
    """A fresh dict of every key's default value."""
    return {k: (list(v.default) if isinstance(v.default, list) else v.default) for k, v in SCHEMA.items()}
