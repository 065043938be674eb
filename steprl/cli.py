"""The `steprl` command line.

    steprl train CONFIG [key=value ...] [--dry-run]
    steprl resume RUN_DIR [key=value ...]
    steprl replay RUN_DIR --step N [--episode I] [--show]
    steprl distill CONFIG [key=value ...]
    steprl eval POLICY [POLICY ...] --env ID --episodes N
    steprl envs [ID --demo SEED | --play SEED]

User mistakes (bad config, missing files, bad arguments) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from steprl.errors import SteprlError

COMMANDS = ("train", "resume", "replay", "distill", "eval", "envs")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message naming the bad argument."""

    def error(self, message: str) -> None:  # noqa: D102
        self.print_usage(sys.stderr)
        print(f"steprl: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subcommand per module `steprl.cmd_<name>`."""
    parser = _Parser(prog="steprl", description="RL for tool-using LM agents; every sample can be drawn again.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"steprl.cmd_{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for noisy in ("ray", "filelock", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.run(args) or 0)
    except SteprlError as e:
        print(f"steprl {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"steprl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
