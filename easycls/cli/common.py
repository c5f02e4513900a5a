"""What every command shares: argv parsing, logging set-up, the run wrapper that maps errors to exit codes,
and the built-in digits data."""
import argparse
import logging
import logging.handlers
import os
import sys

from easycls.config.loading import load_config
from easycls.core.distributed import shutdown
from easycls.core.errors import exit_code
from easycls.core.interrupts import TrainingInterrupted

log = logging.getLogger("easycls")

BUILTIN_DIGITS = "data/digits"


def _parse(argv, prog: str, summary: str):
    parser = argparse.ArgumentParser(prog=prog, description=summary)
    parser.add_argument("--config", help="config file defining cfg = dict(...) (default: ./config.py if present)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as Python literals")
    return parser.parse_args(argv)


def setup_logging(main_process: bool = True) -> None:
    """INFO to stdout on the main process (warnings only elsewhere), held in memory for the log file too.

    Nothing is written until :func:`start_log_file`: a run that fails on bad input leaves no folder behind.
    """
    log.handlers.clear()
    log.setLevel(logging.INFO if main_process else logging.WARNING)
    log.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if main_process:
        log.addHandler(logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1))


def start_log_file(save_dir: str, name: str) -> None:
    """Create ``save_dir`` and log to ``save_dir/name`` from now on, starting with what was held in memory."""
    held = [h for h in log.handlers if isinstance(h, logging.handlers.MemoryHandler)]
    if not held:
        return
    os.makedirs(save_dir, exist_ok=True)
    handler = logging.FileHandler(os.path.join(save_dir, name), mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    held[0].setTarget(handler)
    held[0].flush()
    log.removeHandler(held[0])
    log.addHandler(handler)


def _run(command, argv, prog: str, summary: str) -> int:
    args = _parse(argv, prog, summary)
    try:
        return exit_code(lambda: command(load_config(args.config, args.overrides)))
    except TrainingInterrupted:
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutdown()


# ----------------------------------------------------------------------------- train
def is_builtin_digits(path: str) -> bool:
    """True for data/digits itself or a folder inside it (not data/digits_v2)."""
    parts = os.path.normpath(path).split(os.sep)
    return parts[:2] == BUILTIN_DIGITS.split("/")


def ensure_builtin_data(cfg: dict) -> None:
    """Write scikit-learn's digits under data/digits the first time the default config is trained."""
    paths = [cfg[k] for k in ("train_path", "val_path", "test_path") if cfg[k]]
    if all(map(is_builtin_digits, paths)) and not os.path.isdir(cfg["train_path"]):
        from easycls.datasets import make_digits  # scikit-learn's loaders: only for a first run
        make_digits(BUILTIN_DIGITS, seed=cfg["random_seed"])
        print(f"created the built-in digits dataset (scikit-learn, 1,797 images) in {BUILTIN_DIGITS}/")
