"""Where the command line writes its results (stdout): the one place the CLI layer prints."""

from __future__ import annotations

import sys


def emit(text: str = "", end: str = "\n", flush: bool = True) -> None:
    """Write one block of user-facing output to stdout (flushed: interactive play reads it at once)."""
    sys.stdout.write(text + end)
    if flush:
        sys.stdout.flush()


def warn(text: str) -> None:
    """Write one line for the user to stderr: errors and warnings, kept out of the results on stdout."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
