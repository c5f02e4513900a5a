"""`python train.py [--config FILE] [key=value ...]`: see README.md."""
import sys

from easycls.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
