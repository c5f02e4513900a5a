"""`python predict.py [--config FILE] [key=value ...]`: see README.md."""
import sys

from easycls.cli import predict_main

if __name__ == "__main__":
    sys.exit(predict_main())
