"""Ctrl-C and SIGTERM that stop a run cleanly, between simulator steps.

The simulator stack swallows KeyboardInterrupt in places (bare `except:` around resets), so a plain
Ctrl-C can vanish. Here the first SIGINT or SIGTERM (what SLURM sends at a time limit, on preemption or
`scancel`) only sets a flag that the rollout loop checks after every simulator call, then raises there; the
run writes its summary and exits non-zero. A second signal of the same kind acts at once: under a command that
called `stop_on_signals` first (`python -m evaluate`), by raising Stopped where the process is.
"""
from __future__ import annotations

import signal
import threading

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by a signal (a KeyboardInterrupt, so no `except Exception` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_on_signals() -> None:
    """From a command's first line on: SIGINT and SIGTERM raise Stopped wherever the process is (importing, checking
    the config, loading weights), so an early signal ends with the command's one-line stop message too, as does a
    second one during a run (InterruptGuard hands the signal back to this handler after the first)."""
    if threading.current_thread() is threading.main_thread():
        for signum in HANDLED:
            signal.signal(signum, _raise_stopped)


STOPS: list[int] = []  # the signals `_raise_stopped` acted on, in order


def _raise_stopped(signum, frame) -> None:
    STOPS.append(signum)
    raise Stopped(signum)


class InterruptGuard:
    def __init__(self):
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in HANDLED}
        return self

    def _on_signal(self, signum, frame) -> None:
        self.requested = signum
        signal.signal(signum, self._previous[signum])  # the next one acts at once

    def check(self) -> None:
        if self.requested is not None:
            raise Stopped(self.requested)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
