"""Rebuild the policy of a recorded version from a checkpoint plus the recorded updates, checking weights on the way.

`steprl replay` needs the exact weights a step was played with. Updates are deterministic, so the
newest verified checkpoint at or before that version plus the recorded steps after it gives them.
To also prove that the arithmetic of this machine matches the run's, the rebuild starts one
checkpoint earlier when there is one, and at the checkpoint it passes compares the sha256 of the
rebuilt model and learner-state files with that checkpoint's files. Token replay alone cannot show
this: Gumbel-max sampling rarely flips on a last-bit difference in the weights.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steprl.agents.device import resolve_device
from steprl.agents.policy import Policy, load_policy, save_policy
from steprl.errors import SteprlError
from steprl.rollout.trajectory import Trajectory
from steprl.run.files.checkpoint import (
    Checkpoint,
    CheckpointError,
    list_checkpoints,
    sha256_file,
    verify,
    write_learner_state,
)
from steprl.run.learning.ranks import rank_threads, torch_threads
from steprl.run.learning.trainers import rl_learner


@dataclass(frozen=True)
class WeightCheck:
    """The rebuilt state compared with a checkpoint: `file` is the first differing file ('' when all match)."""

    step: int
    checkpoint: str
    files: int
    file: str = ""
    rebuilt: str = ""
    recorded: str = ""

    @property
    def ok(self) -> bool:
        """True when every compared file has the checkpoint's sha256."""
        return not self.file


@dataclass
class Rebuilt:
    """The rebuilt policy, the checkpoint it started from and the weight check on the way (None: none passed)."""

    policy: Policy
    start: Checkpoint
    check: WeightCheck | None


def verified_at_or_before(ckpt_dir: Path, version: int, n: int) -> list[Checkpoint]:
    """Up to `n` verified checkpoints with step <= version, newest first (damaged ones are skipped)."""
    out: list[Checkpoint] = []
    for step, path in reversed(list_checkpoints(ckpt_dir)):
        if step > version:
            continue
        try:
            out.append(verify(path))
        except CheckpointError:
            continue
        if len(out) == n:
            break
    return out


def rebuild_policy(run_dir: Path, cfg: Any, version: int, read_record: Callable[[Path, int], list[Trajectory]],
                   check_weights: bool = True) -> Rebuilt:
    """The policy of `version`; with `check_weights`, started one checkpoint early and checked at the next one."""
    ckpt_dir = run_dir / "checkpoints"
    ckpts = verified_at_or_before(ckpt_dir, version, 2 if check_weights else 1)
    if not ckpts:
        raise SteprlError(f"{run_dir}: no verified checkpoint at or before policy version {version}")
    target, start = ckpts[0], ckpts[-1]
    policy = load_policy(start.model_dir)
    policy.model.to(resolve_device(cfg.run.device, fresh=False))  # the run's recorded device
    if start.step == version:
        return Rebuilt(policy, start, None)
    learner = rl_learner(cfg, policy, ckpt_dir)
    if start.state.get("stage") == "rl":
        learner.load_state_dict(start.learner_state())
    check, inflight = None, None
    with torch_threads(rank_threads(cfg)):  # the thread count the run's learner computed with
        for s in range(start.step, version):
            at_target = target is not start and s + 1 == target.step
            if at_target and int(target.state.get("staleness", 0)) == 1:  # the RL stage keeps version s in flight
                inflight = {"version": s, "weights": learner.weights()}
            learner.update(read_record(run_dir, s))
            if at_target:
                extra = {} if inflight is None else {"inflight": inflight}
                check = compare_with_checkpoint(target, policy, {**learner.state_dict(), **extra})
    return Rebuilt(policy, start, check)


def compare_with_checkpoint(ckpt: Checkpoint, policy: Policy, learner_state: Any) -> WeightCheck:
    """Write the rebuilt model and learner state as a checkpoint would, compare their sha256 with `ckpt`'s files.

    Model files come first, so a difference in the weights is named before one in the optimizer state.
    """
    with tempfile.TemporaryDirectory(prefix="steprl-rebuild-") as tmp:
        root = Path(tmp)
        save_policy(policy, root / "model")
        write_learner_state(learner_state, root)
        rels = sorted(p.relative_to(root).as_posix() for p in (root / "model").glob("*.safetensors"))
        rels += ["learner.safetensors", "learner.json"]
        for rel in rels:
            mine = sha256_file(root / rel)
            theirs = sha256_file(ckpt.path / rel) if (ckpt.path / rel).is_file() else "missing"
            if mine != theirs:
                return WeightCheck(ckpt.step, ckpt.path.name, len(rels), rel, mine, theirs)
    return WeightCheck(ckpt.step, ckpt.path.name, len(rels))
