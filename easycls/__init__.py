"""easycls: fine-tune image classifiers on folder-labelled datasets.

The names below are imported on first use, so that ``predict.py`` with an exported model never imports timm.
"""
import importlib

__version__ = "0.1.0"
_EXPORTS = {
    "train": "easycls.api", "evaluate": "easycls.api", "predict": "easycls.api", "export": "easycls.api",
    "load_model": "easycls.api", "TrainResult": "easycls.api",
    "Hook": "easycls.engine.hooks", "list_hooks": "easycls.engine.hooks", "register_hook": "easycls.engine.hooks",
    "ModelRunner": "easycls.engine.runner", "InferenceModel": "easycls.evaluation.predictor",
    "Predictor": "easycls.evaluation.predictor", "create_model": "easycls.models.factory",
    "load_pretrained": "easycls.models.factory", "list_models": "easycls.models.factory",
    "list_losses": "easycls.optim.losses", "list_optimizers": "easycls.optim.optimizers",
    "list_schedulers": "easycls.optim.schedulers", "load_config": "easycls.config",
    "ConfigError": "easycls.core.errors", "DataError": "easycls.core.errors",
    "CheckpointError": "easycls.core.errors", "TrainingError": "easycls.core.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'easycls' has no attribute {name!r}")
