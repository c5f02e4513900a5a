"""Wall-clock time for ``time_budget``: durations written as ``90``, ``'90s'``, ``'10m'`` or ``'1.5h'``, and the
moment this process started, so that a budget also counts the interpreter's start-up and the imports.

Every time here is a ``time.monotonic()`` reading: immune to the system clock being set while a run trains.
"""
import math
import os
import re
import time

_IMPORTED = time.monotonic()  # the fallback start where /proc is missing: as early as this package is imported
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", re.IGNORECASE)
DURATION_HELP = "0 (off), seconds as a number, or a string such as '90s', '10m' or '1.5h'"


def parse_duration(value) -> float:
    """Seconds from a number of seconds or a string ``'<number>[s|m|h]'``; raises ValueError for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value >= 0 and math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            return float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    raise ValueError(f"{value!r} is not a duration; give {DURATION_HELP}")


def format_duration(seconds: float) -> str:
    """``'45s'``, ``'3m05s'`` or ``'1h02m'``: a remaining time for people."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def process_start() -> float:
    """The ``time.monotonic()`` reading at which this process started, or under torchrun its launcher (the parent
    process), so that a budget counts the launcher's start-up too.

    On Linux, from the kernel's record of the start (``/proc/<pid>/stat``, in clock ticks since boot) against the
    time since boot, to about 10 ms; elsewhere, when this module was first imported.
    """
    pid = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else "self"
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime; fields[0] is field 3
        running = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, IndexError, ValueError, AttributeError):
        return _IMPORTED
    return time.monotonic() - max(0.0, running)
