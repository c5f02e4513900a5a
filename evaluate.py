"""`python evaluate.py [--config FILE] [key=value ...]`: see README.md."""
import sys

from easycls.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
