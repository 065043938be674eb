"""User-facing error types: the CLI prints their message (no traceback) and exits 2."""

from __future__ import annotations


class SteprlError(Exception):
    """A mistake in the user's input (config, path, argument, file) with a message that says what to do."""


class ConfigError(SteprlError):
    """A config value is unknown, mistyped or impossible; the message names the key."""


class Interrupted(SteprlError):
    """Training stopped by Ctrl-C after a clean checkpoint; the message says how to resume."""
