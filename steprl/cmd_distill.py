"""`steprl distill`: not built yet (exits 2 saying so)."""

from __future__ import annotations

import argparse

from steprl.errors import SteprlError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `distill` subcommand."""
    p = sub.add_parser("distill", help="distill (not built yet)")
    p.add_argument("rest", nargs="*")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Refuse honestly until the stage exists."""
    raise SteprlError("this command is not built yet")
