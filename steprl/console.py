"""Where the command line writes its results (stdout): the one place the CLI layer prints."""

from __future__ import annotations

import sys


def emit(text: str = "") -> None:
    """Write one block of user-facing output to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
