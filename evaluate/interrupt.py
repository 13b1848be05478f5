"""Ctrl-C that stops a run cleanly, between simulator steps.

The simulator stack swallows KeyboardInterrupt in places (bare `except:` around resets), so a plain
Ctrl-C can vanish. Here the first SIGINT only sets a flag that the rollout loop checks after every
simulator call, then raises KeyboardInterrupt there; a second SIGINT interrupts at once as usual.
"""
from __future__ import annotations

import signal
import threading


class InterruptGuard:
    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # the next Ctrl-C acts at once

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
