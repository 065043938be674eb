"""`steprl replay RUN_DIR --step N [--episode I] [--show]`: re-play a recorded step and prove it identical.

The weights step N was played with are rebuilt exactly: the newest verified checkpoint at or
before that policy version is loaded and the learner re-applies the recorded steps after it
(updates are deterministic), so replay works for every step, not only checkpointed ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steprl.console import emit, warn
from steprl.errors import SteprlError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `replay` subcommand."""
    p = sub.add_parser("replay", help="re-play a recorded step and compare it with the record",
                       description="Exit 0 when every trajectory is identical, 1 when one differs (each named).")
    p.add_argument("run_dir", help="a run directory (runs/<name>)")
    p.add_argument("--step", type=int, required=True, help="RL step to replay")
    p.add_argument("--episode", type=int, default=None, help="replay only the micro-batch holding this episode")
    p.add_argument("--show", action="store_true", help="print the episode(s) as readable transcripts")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Rebuild the weights, replay, compare, report."""
    from steprl.rollout.plan import plan_step
    from steprl.rollout.replay import compare, replay, transcript
    from steprl.run.run_dir import open_run_dir

    run_dir, cfg = open_run_dir(args.run_dir)
    from steprl.run.fingerprint import check_against

    for line in check_against(run_dir, cfg.run.kernels, cfg.run.threads):
        warn(f"steprl replay: warning: {line}")
    recorded = read_record(run_dir, args.step)
    if args.episode is not None:
        recorded = [t for t in recorded if t.spec.index == args.episode]
        if not recorded:
            raise SteprlError(f"episode {args.episode} is not in step {args.step}")
    version = recorded[0].policy_version
    policy, _ = rebuild_policy(run_dir, cfg, version)
    from steprl.rollout.workers import RolloutWorker
    from steprl.run.pools import worker_spec

    worker = RolloutWorker(worker_spec(cfg, policy))
    worker.set_weights(version, policy.model.state_dict())
    specs = plan_step(cfg, args.step)
    try:
        replayed = replay(worker, specs, version, cfg.rollout.micro_batch, args.episode)
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
        return 0
    for m in bad:
        emit(f"episode {m.index}: {m.detail}")
    emit(f"{n - len(bad)}/{n} trajectories identical; {len(bad)} differ")
    return 1


def rebuild_policy(run_dir: Path, cfg, version: int):
    """The policy at `version`: the newest verified checkpoint <= version, plus the recorded updates after it."""
    from steprl.agents.policy import load_policy
    from steprl.run.checkpoint import CheckpointError, list_checkpoints, verify
    from steprl.run.torch_setup import setup_torch
    from steprl.run.trainers import rl_learner

    setup_torch(cfg.run.threads)
    ckpt = None
    for step, path in reversed(list_checkpoints(run_dir / "checkpoints")):
        if step <= version:
            try:
                ckpt = verify(path)
                break
            except CheckpointError:
                continue
    if ckpt is None:
        raise SteprlError(f"{run_dir}: no verified checkpoint at or before policy version {version}")
    policy = load_policy(ckpt.model_dir)
    if ckpt.step == version:
        return policy, ckpt
    learner = rl_learner(cfg, policy, run_dir / "checkpoints")
    if ckpt.state.get("stage") == "rl":
        learner.load_state_dict(ckpt.learner_state())
    for s in range(ckpt.step, version):
        learner.update(read_record(run_dir, s))
    return policy, ckpt


def read_record(run_dir: Path, step: int):
    """Step `step`'s verified trajectories; a missing, damaged or tampered record is a user-facing error."""
    from steprl.rollout.store import RecordError, read_step

    try:
        return read_step(run_dir / "rollouts", step)
    except RecordError as e:
        raise SteprlError(str(e)) from None
