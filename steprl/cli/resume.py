"""`steprl resume RUN_DIR [key=value ...]`: continue a run from its newest complete checkpoint.

Only overrides that cannot change the data already trained on are accepted: extending
`rl.steps`, checkpoint cadence, workers/executor/Ray placement, the learner's world size, evaluation size and
stages. Extending `rl.steps` keeps the lr schedule's horizon: a run whose `learner.schedule_steps` is 0 (the
horizon is rl.steps) gets its old rl.steps recorded there, so the extended run is bitwise an uninterrupted run
with the new rl.steps and that `learner.schedule_steps`; past the horizon a linear or cosine schedule runs at
its floor (lr x 0 for RL).
"""

from __future__ import annotations

import argparse

from steprl.console import warn
from steprl.errors import ConfigError

SAFE_PREFIXES = (
    "rl.steps",
    "rl.checkpoint_every",
    "rl.keep_last",
    "rl.keep_every",
    "rollout.workers",
    "rollout.executor",
    "rollout.max_retries",
    "rollout.micro_batch_timeout_s",
    "rollout.num_cpus_per_worker",
    "rollout.num_gpus_per_worker",
    "learner.world_size",  # bitwise invariant: the same gradient tree at every world size
    "learner.cpus_per_rank",
    "ray.",
    "eval.",
    "stages",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `resume` subcommand."""
    p = sub.add_parser(
        "resume",
        help="continue a run from its newest complete checkpoint",
        description="Continue (or extend, with rl.steps=M) a run; the result is bitwise identical to an "
        "uninterrupted run (extended: one with rl.steps=M and the run's lr schedule horizon, "
        "learner.schedule_steps, which resume records).",
    )
    p.add_argument("run_dir", help="a run directory (runs/<name>)")
    p.add_argument("overrides", nargs="*", help="safe overrides only, e.g. rl.steps=60 rollout.workers=4")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check overrides, then resume."""
    from steprl.run.files.run_dir import open_run_dir

    run_dir, cfg = open_run_dir(args.run_dir)
    for item in args.overrides:
        key = item.partition("=")[0].strip()
        if not any(
            key == p or key.startswith(p if p.endswith(".") else p + ".") or key == p.rstrip(".") for p in SAFE_PREFIXES
        ):
            raise ConfigError(
                f"override {item!r}: {key!r} would change data already trained on; "
                f"resume accepts only {', '.join(p.rstrip('.') for p in SAFE_PREFIXES)} (start a new run instead)"
            )
    if args.overrides:
        cfg = _apply(cfg, args.overrides, run_dir)
    from steprl.cli.train import print_summary
    from steprl.pipeline import resume
    from steprl.run.loop.preflight import check_run

    check_run(cfg)  # e.g. a ray.address override that nothing answers: refused before any work
    from steprl.run.machine.fingerprint import check_against

    for line in check_against(run_dir, cfg.run.kernels, cfg.run.threads):
        warn(f"steprl resume: warning: {line}")
    return print_summary(resume(run_dir, cfg), run_dir)


def _apply(cfg, overrides: list[str], run_dir):
    """Apply overrides to a saved config (through the same validation as `train`); `resume` saves it under the lock."""
    import tempfile
    from pathlib import Path

    from steprl.config import load_config, to_yaml

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "config.yaml"
        p.write_text(to_yaml(cfg))
        new = load_config(str(p), overrides)
    if new.rl.steps < cfg.rl.steps:
        raise ConfigError(
            f"rl.steps={new.rl.steps} is less than the run's {cfg.rl.steps}; resume can only extend a run"
        )
    if new.rl.steps > cfg.rl.steps and not new.learner.schedule_steps:
        new.learner.schedule_steps = cfg.rl.steps  # the lr of a step must not depend on when the run was extended
        if new.learner.schedule != "constant":
            warn(f"steprl resume: the {new.learner.schedule} lr schedule ends at step {cfg.rl.steps} "
                 f"(learner.schedule_steps={cfg.rl.steps}, recorded in config.yaml): steps {cfg.rl.steps}-"
                 f"{new.rl.steps - 1} run at its floor, lr 0; for a decay over {new.rl.steps} steps start a new run")
    return new
