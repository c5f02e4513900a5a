"""Ctrl-C during training as a flag that the runner checks between batches."""
import signal
import threading

import torch

from easycls.core.distributed import DistInfo, any_rank


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

    def requested_on_any(self, dist: DistInfo, device: torch.device) -> bool:
        """Whether Ctrl-C was pressed on any rank. Every rank must ask at the same points (a collective under
        torchrun: torchrun passes Ctrl-C on to every worker, and they may see it a step apart), so that all stop
        after the same step."""
        return any_rank(self.requested, dist, device)

    def __enter__(self) -> "CtrlC":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
