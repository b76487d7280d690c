"""Stopping a run cleanly when the scheduler asks: SIGTERM or SIGUSR1 -> finish the step, save, exit.

SLURM (``--signal=USR1@120``), Kubernetes and cloud spot instances send one of these before
they kill a job. :class:`StopSignals` turns them into a flag the training loop polls after
every optimizer step; the trainer then writes ``last.pt`` (mid-epoch), logs it and returns
with ``preempted=True``, and ``irevnet train`` exits with :data:`PREEMPTED_EXIT_CODE`, so a
requeued job continues with ``--resume``. A second signal of the same kind while saving
falls back to the default action (the process dies at once).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["PREEMPTED_EXIT_CODE", "STOP_SIGNALS", "StopSignals"]

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 75
"""Exit status of ``irevnet train`` after a stop signal (``EX_TEMPFAIL``: try again later, with ``--resume``)."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """Context manager: while active, SIGTERM / SIGUSR1 set :attr:`received` instead of killing the process.

    Handlers can only be installed from the main thread; elsewhere it does nothing (the
    signals keep their previous behaviour). The previous handlers are restored on exit.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.received == sig:  # asked twice: stop waiting for the step to finish
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)
        self.received = sig

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        else:
            log.debug("not in the main thread: stop signals are not handled")
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
