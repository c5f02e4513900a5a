"""A run's log file: records are held in memory until the run's folder exists, then written to it.

This is an output of the run, like ``results.csv``, not a logging set-up: the handler lives only for the run, and
console output is the command line's business (a notebook calling :func:`easycls.train` sees nothing printed).
"""
import logging
import logging.handlers
import os

LOGGER = logging.getLogger("easycls")


class RunLog:
    """``with RunLog() as run_log: ...; run_log.start(save_dir, "train.log")``. Disabled off the main process."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.handler = None
        self.level = LOGGER.level

    def __enter__(self) -> "RunLog":
        if self.enabled:
            self.handler = logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1)
            LOGGER.addHandler(self.handler)
            if not LOGGER.isEnabledFor(logging.INFO):
                LOGGER.setLevel(logging.INFO)  # the file holds the INFO lines whatever the caller's level is
        return self

    def start(self, save_dir: str, name: str) -> None:
        """Create ``save_dir`` and append to ``save_dir/name`` from now on, beginning with what was held."""
        if not isinstance(self.handler, logging.handlers.MemoryHandler):
            return
        os.makedirs(save_dir, exist_ok=True)
        target = logging.FileHandler(os.path.join(save_dir, name), mode="a", encoding="utf-8")
        target.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.handler.setTarget(target)
        self.handler.flush()
        LOGGER.removeHandler(self.handler)
        LOGGER.addHandler(target)
        self.handler = target

    def __exit__(self, *exc) -> None:
        if self.handler is not None:
            LOGGER.removeHandler(self.handler)
            self.handler.close()
            self.handler = None
        LOGGER.setLevel(self.level)
