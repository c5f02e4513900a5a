"""easycls: fine-tune image classifiers on folder-labelled datasets.

The names below are imported on first use, so that ``predict.py`` with an exported model never imports timm.
"""
import importlib

__version__ = "0.1.0"
_EXPORTS = {"Hook": "hooks", "list_hooks": "hooks", "register_hook": "hooks", "InferenceModel": "inference",
            "ModelRunner": "runner", "create_model": "models", "load_pretrained": "models", "load_config": "config"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'easycls' has no attribute {name!r}")
