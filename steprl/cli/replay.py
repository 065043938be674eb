"""`steprl replay RUN_DIR --step N [--episode I] [--show]`: re-play a recorded step and prove it identical.

The weights step N was played with are rebuilt exactly: a verified checkpoint at or before that
policy version is loaded and the learner re-applies the recorded steps after it (updates are
deterministic), so replay works for every step, not only checkpointed ones. The rebuild starts one
checkpoint early and checks the weights at the checkpoint it passes (steprl/run/learning/rebuild.py): weights
that diverged are reported apart from trajectories that differ and from a tampered record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steprl.console import emit, warn
from steprl.errors import SteprlError

DESCRIPTION = """Re-play a recorded step with the weights it was played with and compare it with the record.

The weights are rebuilt from the checkpoint before the newest one at or before the step's policy
version, plus the recorded updates; at that newest checkpoint the rebuilt model and learner state
are compared (sha256) with the checkpoint's files.

exit status:
  0  every trajectory identical (and the weights verified, when a checkpoint was passed)
  1  trajectories differ (each episode named with its first differing token)
  2  a user-facing error: a missing, damaged or tampered record (e.g. digest mismatch), no checkpoint
  3  weights diverged at a checkpoint: this machine's arithmetic differs from the run's
     (the trajectories are still compared and reported)

Portable kernels (run.kernels=portable, the default on AVX2 CPUs) give the same bits on CPUs of one
vendor; a run recorded on an Intel CPU and replayed on an AMD one (or the other way) has the same data
and tokens until the first divergence, reported as exit 3 with the step.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `replay` subcommand."""
    p = sub.add_parser("replay", help="re-play a recorded step and compare it with the record",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run directory (runs/<name>)")
    p.add_argument("--step", type=int, required=True, help="RL step to replay")
    p.add_argument("--episode", type=int, default=None, help="replay only the micro-batch holding this episode")
    p.add_argument("--show", action="store_true", help="print the episode(s) as readable transcripts")
    p.add_argument("--no-weight-check", dest="check_weights", action="store_false",
                   help="start from the newest checkpoint at or before the version (fewer updates to re-apply), "
                        "without checking the rebuilt weights against a checkpoint")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Rebuild the weights (checking them at a checkpoint), replay, compare, report; see DESCRIPTION for exits."""
    from steprl.rollout.plan import plan_step
    from steprl.rollout.replay import compare, replay, transcript
    from steprl.run.files.run_dir import open_run_dir
    from steprl.run.learning.rebuild import rebuild_policy

    run_dir, cfg = open_run_dir(args.run_dir)
    from steprl.run.loop.preflight import build_env

    build_env(cfg.env.id, dict(cfg.env.kwargs)).close()  # e.g. a data file that changed (env.kwargs.sha256)
    replay_device(cfg)
    from steprl.run.machine.fingerprint import check_against

    for line in check_against(run_dir, cfg.run.kernels, cfg.run.threads):
        warn(f"steprl replay: warning: {line}")
    recorded = read_record(run_dir, args.step)
    if args.episode is not None:
        recorded = [t for t in recorded if t.spec.index == args.episode]
        if not recorded:
            raise SteprlError(f"episode {args.episode} is not in step {args.step}")
    version = recorded[0].policy_version
    rebuilt = rebuild_policy(run_dir, cfg, version, read_record, args.check_weights)
    policy = rebuilt.policy
    diverged = report_weights(rebuilt, args.check_weights)
    from steprl.rollout.workers import RolloutWorker
    from steprl.run.loop.pools import worker_spec

    worker = RolloutWorker(worker_spec(cfg, policy))
    worker.set_weights(version, policy.model.state_dict())
    specs = plan_step(cfg, args.step)
    try:
        replayed = replay(worker, specs, version, cfg.rollout.micro_batch, args.episode, cfg.rollout.max_retries)
    except ValueError as e:
        raise SteprlError(str(e)) from None
    bad = compare(recorded, replayed)
    if args.show:
        by = {t.spec.index: t for t in replayed}
        for t in recorded:
            emit(transcript(by.get(t.spec.index, t), worker.turn_format.decode, color=sys.stdout.isatty()))
            emit()
    n = len(recorded)
    if not bad:
        emit(f"{n}/{n} trajectories identical (step {args.step}, policy version {version})")
        return 3 if diverged else 0
    for m in bad:
        emit(f"episode {m.index}: {m.detail}")
    changed = [m for m in bad if m.env_changed]
    if changed:
        from steprl.rollout.replay import ENV_CHANGED

        emit(ENV_CHANGED.format(index=changed[0].index))
    emit(f"{n - len(bad)}/{n} trajectories identical; {len(bad)} differ")
    return 3 if diverged else 1


def report_weights(rebuilt, checked: bool) -> bool:
    """Say how the rebuilt weights were checked; True when they diverged from the checkpoint passed."""
    c, start = rebuilt.check, rebuilt.start
    if c is None:
        why = "--no-weight-check" if not checked else f"no verified checkpoint before {start.path.name} to start from"
        emit(f"weights not checked ({why}); rebuilt from checkpoint {start.path.name}")
        return False
    if c.ok:
        emit(f"weights verified at step {c.step} against checkpoint {c.checkpoint} (rebuilt from {start.path.name}; "
             f"{c.files} files, sha256 identical)")
        return False
    emit(f"weights diverged at step {c.step} (checkpoint {c.checkpoint}: rebuilt sha256 {c.rebuilt[:16]}, "
         f"recorded {c.recorded[:16]} in {c.file}); this machine's arithmetic differs from the run's")
    return True


def read_record(run_dir: Path, step: int):
    """Step `step`'s verified trajectories; a missing, damaged or tampered record is a user-facing error."""
    from steprl.rollout.store import RecordError, read_step

    try:
        return read_step(run_dir / "rollouts", step)
    except RecordError as e:
        raise SteprlError(str(e)) from None


def replay_device(cfg) -> None:
    """Follow the run's recorded device: cuda needs a GPU here (a config error naming run.device) and the CUDA
    determinism settings before CUDA starts (agents/device.py)."""
    from steprl.agents.device import cuda_determinism, resolve_device
    from steprl.errors import ConfigError
    from steprl.run.loop.preflight import device_problem
    from steprl.run.machine.kernels import verify

    verify(cfg.run.kernels)  # the recorded kernel mode, or a clear error (never a silent native replay)
    cfg.run.device = resolve_device(cfg.run.device, fresh=False)
    bad = device_problem(cfg)
    if bad:
        raise ConfigError(f"replay: the run was trained on cuda; {bad}")
    if cfg.run.device == "cuda":
        cuda_determinism()
