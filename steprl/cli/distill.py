"""`steprl distill CONFIG [key=value ...]`: distil a trained teacher into a smaller student.

    steprl distill smoke distill.teacher=runs/smoke distill.method=on_policy distill.steps=20

`distill.teacher` is a checkpoint directory, a run directory (its newest verified checkpoint)
or a save_pretrained directory. The student (`distill.student.*`) shares the teacher's
tokenizer; a different tokenizer or a missing teacher is refused with a one-line error (exit 2).
Output: runs/<run.name>/distill/ (config.yaml, checkpoints/, rollouts/, metrics.jsonl, plots/,
summary.json); running the same command again resumes from its newest checkpoint.
"""

from __future__ import annotations

import argparse

from steprl.config import load_config
from steprl.console import emit, warn
from steprl.run.reporting.metrics import skip_warnings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `distill` subcommand."""
    p = sub.add_parser(
        "distill",
        help="distil a trained teacher into a smaller student",
        description="Distil distill.teacher into distill.student "
        "(on-policy reverse KL, off-policy forward KL or mixed).",
    )
    p.add_argument("config", help="YAML path or preset name (quickstart, smoke, ...)")
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. distill.teacher=runs/quickstart distill.steps=20"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, distil, print the held-out comparison; exit status 1 when the guards skipped every step."""
    cfg = load_config(args.config, args.overrides)
    from steprl.run.loop.preflight import check_run

    check_run(cfg, standalone_distill=True)
    from steprl.stages.distill import run_standalone  # heavy imports only when distilling

    r = run_standalone(cfg)
    ret = "n/a" if r.get("retention") is None else f"{r['retention']:.2f}"
    emit(f"Distilled {r['teacher']} ({r['teacher_params']:,} params) into a {r['student_params']:,}-parameter student "
          f"in {r['steps']} {r['method']} steps.")
    emit(
        f"Held-out ({r['eval_episodes']} episodes): student success {r['success']:.3f} (before "
        f"{r['success_before']:.3f}), "
        f"teacher {r['teacher_success']:.3f}, retention {ret}; reverse KL student->teacher "
        f"{r['kl_before']:.4f} -> {r['kl_after']:.4f} nats/token."
    )
    emit(f"The student lives in {r['dir']}; final checkpoint {r['final_checkpoint']}.")
    lines, failed = skip_warnings({"distill": r})
    for line in lines:  # last, so a student that did not train says so (exit 1 when no step trained)
        warn(f"steprl: {line}")
    return 1 if failed else 0
