"""Stopping a run cleanly: SIGTERM, SIGUSR1 or SIGINT (Ctrl-C) -> finish the step, save, exit.

SLURM (``--signal=USR1@120``), Kubernetes and cloud spot instances send SIGTERM or SIGUSR1
before they kill a job; a person at the terminal presses Ctrl-C. :class:`StopSignals` turns
them into a flag the training loop polls after every optimizer step; the trainer then writes
``last.pt`` (mid-epoch), logs it and returns with ``preempted=True``, and ``irevnet train``
exits with :func:`exit_code`: :data:`PREEMPTED_EXIT_CODE` after SIGTERM / SIGUSR1, so that a
requeued job continues with ``--resume``, and 130 after Ctrl-C, as any interrupted command.
A second signal of the same kind does at once what it would have done without the trainer:
a second Ctrl-C raises ``KeyboardInterrupt``, a second SIGTERM kills the process.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["INTERRUPTED_EXIT_CODE", "PREEMPTED_EXIT_CODE", "STOP_SIGNALS", "StopSignals", "exit_code"]

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 75
"""Exit status of ``irevnet train`` after SIGTERM / SIGUSR1 (``EX_TEMPFAIL``: try again later, with ``--resume``)."""

INTERRUPTED_EXIT_CODE = 130
"""Exit status after Ctrl-C (128 + SIGINT, what a shell reports for an interrupted command)."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def exit_code(signal_name: str | None) -> int:
    """The exit status of a run stopped by the signal named ``signal_name`` (None: by another rank's)."""
    return INTERRUPTED_EXIT_CODE if signal_name == signal.SIGINT.name else PREEMPTED_EXIT_CODE


class StopSignals:
    """Context manager: while active, the stop signals set :attr:`received` instead of acting.

    Handlers can only be installed from the main thread; elsewhere it does nothing (the
    signals keep their previous behaviour). A signal the process ignores (SIGINT in a
    background job, ``nohup``) stays ignored. The previous handlers are restored on exit.
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
            previous = self._previous.get(sig)
            previous = signal.SIG_DFL if previous is None else previous  # None: a handler not set from Python
            signal.signal(sig, previous)
            if callable(previous):
                previous(signum, frame)  # SIGINT: Python's handler raises KeyboardInterrupt
            else:
                signal.raise_signal(sig)
            return
        self.received = sig

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        else:
            log.debug("not in the main thread: stop signals are not handled")
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
