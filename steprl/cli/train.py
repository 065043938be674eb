"""`steprl train CONFIG [key=value ...]`: run the config's stages (warm-up, RL, distill, eval)."""

from __future__ import annotations

import argparse

from steprl.config import load_config
from steprl.console import emit, warn
from steprl.run.reporting.metrics import skip_warnings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    p = sub.add_parser(
        "train",
        help="train a policy from a config (a YAML path or a preset name)",
        description="Run the config's stages in order. CONFIG is a YAML file or a preset in steprl/configs. "
        "Kernels: run.kernels=auto (default) is portable on AVX2 CPUs: the same bits on CPUs of one vendor; "
        "across vendors (Intel vs AMD) the same data, and tokens until the first divergence, which "
        "`steprl replay` reports as exit 3 (`steprl doctor` shows where this machine's kernels part).",
    )
    p.add_argument("config", help="YAML path or preset name (quickstart, smoke, ...)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rl.steps=10 run.name=try2")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and step 0's plan, then exit")
    p.set_defaults(run=run)


def dry_run_text(cfg) -> str:
    """The resolved config, the stages, step 0's episodes with their task text and the real scheduling."""
    from steprl.cli.dry_run import dry_run_text as text

    return text(cfg)


def topology_dry_run(cfg) -> str:
    """Devices, channels and communicators of one step (steprl/run/learning/topology.py); builds the model to count
    it."""
    from steprl.agents.model import count_parameters
    from steprl.agents.policy import build_policy
    from steprl.run.learning.topology import topology, topology_text

    return topology_text(topology(cfg, count_parameters(build_policy(cfg.model, cfg.tokenizer, cfg.run.seed).model)))


def run(args: argparse.Namespace) -> int:
    """Load and validate the config, then dry-run or train."""
    cfg = load_config(args.config, args.overrides)
    from steprl.run.loop.preflight import check_run

    check_run(cfg)  # before the run directory exists: a config error leaves nothing behind
    if args.dry_run:
        emit(dry_run_text(cfg))
        emit()
        emit(topology_dry_run(cfg))
        return 0
    from steprl.pipeline import train  # heavy imports only when training
    from steprl.run.files.run_dir import run_path

    return print_summary(train(cfg), run_path(cfg))


def print_summary(summary: dict, run_dir) -> int:
    """Write RUN/report.html, then `closing_lines` (which link it); returns the exit status."""
    from steprl.cli.report import report_after_run

    return closing_lines(summary, run_dir, report_after_run(run_dir))


def closing_lines(summary: dict, run_dir, report=None) -> int:
    """The closing paragraph: steps, time, held-out success per stage, where the run lives, what next; then one
    line per stage whose guards skipped most of its steps. Returns the exit status: 1 when a stage skipped
    every step (the run trained nothing), else 0."""
    stages = summary.get("stages", {})
    parts = []
    for name in ("warmup", "rl", "distill", "eval"):
        if name in stages and stages[name].get("success") is not None:
            s = stages[name]
            parts.append(f"{name} {s['success']:.3f}")
    rl = stages.get("rl", {})
    emit()
    skipped = f" ({rl['skipped_steps']} skipped)" if rl.get("skipped_steps") else ""
    peak = f" (driver peak memory {summary['driver_peak_rss_gb']:.1f} GB)" if summary.get("driver_peak_rss_gb") else ""
    emit(f"Run {run_dir.name} finished in {summary.get('wall_s', 0):.0f} s{peak}: "
         f"{rl.get('steps', 0)} RL steps{skipped}; "
         f"held-out success ({stages.get('eval', stages.get('rl', {})).get('eval_episodes', '?')} episodes): "
         + (", ".join(parts) or "n/a") + ".")
    table = stages.get("eval", {}).get("table")
    if table:
        emit(table)
        ratio = stages["eval"].get("student_vs_teacher")
        if ratio and ratio.get("success_ratio") is not None:
            emit(f"student/teacher: success x{ratio['success_ratio']:.2f}, generation speed x{ratio['speedup']:.2f}, "
                 f"parameters x{ratio['param_ratio']:.2f}")
    emit(f"It lives in {run_dir} (metrics.jsonl, plots/, checkpoints/, rollouts/, summary.json); "
          f"final checkpoint {summary.get('final_checkpoint')}.")
    emit(f"Replay a step with `steprl replay {run_dir} --step 0`, extend it with `steprl resume {run_dir} rl.steps=N`.")
    if report is not None:
        emit(f"Report: {report} (open it in a browser; `steprl report RUN [RUN ...]` compares runs).")
    lines, failed = skip_warnings(stages)
    for line in lines:  # last, so the closing lines of a run that did not train say so
        warn(f"steprl: {line}")
    return 1 if failed else 0
