"""easycls: fine-tune image classifiers on folder-labelled datasets."""
from .config import load_config
from .hooks import Hook, list_hooks, register_hook
from .inference import InferenceModel
from .models import create_model, load_pretrained
from .runner import ModelRunner

__all__ = ["Hook", "InferenceModel", "ModelRunner", "create_model", "list_hooks", "load_config", "load_pretrained",
           "register_hook"]
__version__ = "0.1.0"
