"""`python export.py [--config FILE] [key=value ...]`: ONNX and/or TorchScript files; see README.md."""
import sys

from easycls.cli import export_main

if __name__ == "__main__":
    sys.exit(export_main())
