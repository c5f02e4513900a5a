"""What every command shares: argv parsing, console logging, and the wrapper that maps errors to exit codes."""
import argparse
import logging
import os
import sys

from easycls.config import parse_overrides
from easycls.core.errors import exit_code
from easycls.core.interrupts import TrainingInterrupted

log = logging.getLogger("easycls")
EPILOG = """config keys: docs/config.md lists every key with its default and the values it allows (config.py
comments each one too). A value with spaces must be quoted: "target_img_size=[64, 64]".

to continue a run's work (evaluate, predict, export, or train again), pass its resolved config, which holds
the paths and sizes it was trained with: --config output/config.json"""


def parse(argv, prog: str, summary: str):
    """``[--config FILE] [key=value ...]``: the config file (default ./config.py when present) and overrides."""
    parser = argparse.ArgumentParser(prog=prog, description=summary, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a Python file defining cfg = dict(...), or a run's config.json "
                                         "(default: ./config.py if present)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as Python literals")
    return parser.parse_args(argv)


def setup_logging(main_process: bool = True) -> None:
    """The library's log lines on stdout: INFO on the main process, warnings only on the others."""
    log.handlers = [h for h in log.handlers if not getattr(h, "easycls_console", False)]
    log.setLevel(logging.INFO if main_process else logging.WARNING)
    log.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.easycls_console = True
    log.addHandler(console)


def run(command, argv, prog: str, summary: str) -> int:
    """Parse argv, then ``command(config_path, overrides)``; errors become one line and exit 2, Ctrl-C exit 130."""
    args = parse(argv, prog, summary)
    path = args.config or ("config.py" if os.path.isfile("config.py") else None)
    setup_logging(int(os.environ.get("RANK", "0")) == 0)
    try:
        return exit_code(lambda: command(path, parse_overrides(args.overrides)))
    except TrainingInterrupted:
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
