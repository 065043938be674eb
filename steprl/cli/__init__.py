"""The `steprl` command line.

    steprl train CONFIG [key=value ...] [--dry-run]
    steprl resume RUN_DIR [key=value ...]
    steprl replay RUN_DIR --step N [--episode I] [--show]
    steprl distill CONFIG [key=value ...]
    steprl eval POLICY [POLICY ...] --env ID --episodes N
    steprl envs [ID --demo SEED | --play SEED]
    steprl doctor [--kernels portable|native] [--set KEY=VALUE] [--out FILE]
    steprl report RUN [RUN ...] [--out FILE]
    steprl export POLICY [--merge] [--out DIR]

User mistakes (bad config, missing files, bad arguments) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from steprl.console import warn
from steprl.errors import Interrupted, SteprlError

COMMANDS = ("train", "resume", "replay", "distill", "eval", "envs", "doctor", "report", "export")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message naming the bad argument."""

    def error(self, message: str) -> None:  # noqa: D102
        self.print_usage(sys.stderr)
        warn(f"steprl: error: {message}")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subcommand per module `steprl.cli.<name>`."""
    parser = _Parser(prog="steprl", description="RL for tool-using LM agents; every sample can be drawn again.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"steprl.cli.{name}").register(sub)
    return parser


def quiet_transformers() -> None:
    """No per-file progress bars or info chatter from transformers under our own progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    from steprl.run.machine.kernels import apply_from_argv

    try:  # before build_parser: it imports torch, which reads the kernel variables once
        apply_from_argv(argv)
    except SteprlError as e:
        warn(f"steprl: {e}")
        return 2
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `key=value` overrides may come after flags (train quickstart --dry-run rl.steps=2)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    # libraries that log each request or session at INFO (the ecosystem envs' clients and servers among them)
    for noisy in ("ray", "filelock", "urllib3", "matplotlib", "PIL", "httpx", "aiohttp", "verifiers", "mcp",
                  "fastmcp", "uvicorn", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command != "envs":
        quiet_transformers()
    try:
        return int(args.run(args) or 0)
    except Interrupted as e:
        warn(f"steprl {args.command}: {e}")
        return 130
    except SteprlError as e:
        warn(f"steprl {args.command}: {e}")
        return 2
    except (OSError, RuntimeError) as e:  # a failed run: rollout retries spent, disk full, training diverged
        from steprl.learners.guards import TrainingDivergedError
        from steprl.rollout.workers import RolloutError

        if not isinstance(e, (OSError, RolloutError, TrainingDivergedError)):
            raise
        warn(f"steprl {args.command}: {e}")
        return 1
    except KeyboardInterrupt:
        warn(f"steprl {args.command}: interrupted")
        return 130

