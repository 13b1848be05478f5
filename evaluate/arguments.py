"""Command-line parsing for the project's argparse commands (report, collect, sweep, benchmarks): a refused
argument is one `error:` line, as in `python -m evaluate`, and numbers that would make a command run for
minutes and then crash or print meaningless figures (`--rounds 0`, `--width 0`) are refused before any work.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CommandParser(argparse.ArgumentParser):
    """argparse whose refusals are one line, `error: ...`, without the usage block (`--help` shows it)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def at_least(minimum: int):
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not an integer >= {minimum}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def output_directory(path: Path, option: str = "--out") -> Path:
    """`path` as a command's output directory, checked before any work (one `error:` line if it cannot be one)."""
    from evaluate.store import StoreError, check_writable

    try:
        check_writable(path, f"{option} DIR")
    except StoreError as e:
        sys.exit(f"error: {e}")
    return path
