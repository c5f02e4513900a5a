"""easycls: fine-tune image classifiers on folder-labelled datasets."""
from .config import load_config
from .models import create_model, load_pretrained
from .runner import ModelRunner

__all__ = ["ModelRunner", "create_model", "load_config", "load_pretrained"]
__version__ = "0.1.0"
