"""Ctrl-C during training as a flag that the runner checks between batches."""
import signal
import threading


class TrainingInterrupted(Exception):
    """Ctrl-C during training; ``path`` is the checkpoint that was saved so the run can resume."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


class CtrlC:
    """While entered, the first Ctrl-C sets ``requested`` and the second raises KeyboardInterrupt at once.

    A KeyboardInterrupt raised wherever the signal lands can be lost: inside a finalizer run by the garbage
    collector, or inside a C extension's import. A flag checked at known points cannot.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raise KeyboardInterrupt when Ctrl-C was pressed."""
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> "CtrlC":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
