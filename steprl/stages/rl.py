"""The `rl` stage: the policy-gradient step loop, from the checkpoint's step (0 after warm-up) to rl.steps.

Step N is played with policy version `rollout_version(N, staleness)`. With staleness 1 the pool plays
step N+1 (with version N) while the learner updates on step N, and a checkpoint keeps version N's
weights as the in-flight state, so resume continues exactly.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

import torch

from steprl.agents.model import count_parameters
from steprl.errors import SteprlError
from steprl.rollout.plan import plan_step, rollout_version
from steprl.rollout.trajectory import Trajectory
from steprl.run.learning.channels import ObjectStoreChannel
from steprl.run.learning.learner import Learner, make_learner
from steprl.run.learning.topology import topology, write_topology
from steprl.run.loop.evaluate import success_fields
from steprl.run.loop.loop import Loop, run_steps
from steprl.run.loop.state import RunState
from steprl.run.reporting.metrics import skip_fields

log = logging.getLogger(__name__)


def _resume_point(run: RunState, learner: Learner) -> tuple[int, dict[str, torch.Tensor]]:
    """(first step, weights of the version that plays it): from the checkpoint's learner and in-flight state."""
    staleness, ckpt = run.cfg.rollout.staleness, run.resume_from
    if ckpt is None or ckpt.state.get("stage") != "rl":
        return 0, learner.weights()
    saved = ckpt.learner_state()
    learner.load_state_dict(saved)
    start = ckpt.step
    run.metrics.truncate_after(start - 1, "rl")
    version = rollout_version(start, staleness)
    if version == start:
        return start, learner.weights()
    inflight = saved.get("inflight")
    if not inflight or int(inflight["version"]) != version:
        raise SteprlError(
            f"{ckpt.path} holds no weights of policy version {version}, which plays step {start} "
            f"with rollout.staleness={staleness}; it was written with another staleness (start a new run)"
        )
    return start, inflight["weights"]


class RLSteps:
    """Play on the run's pool, update the learner; with staleness 1 the next step plays during the update."""

    def __init__(self, run: RunState, learner: Learner, start: int, weights: dict[str, torch.Tensor]) -> None:
        """Send the weights that play step `start` and submit it."""
        self.run, self.learner = run, learner
        self.staleness, self.total = run.cfg.rollout.staleness, run.cfg.rl.steps
        self.pool = run.get_pool()
        self.channel = ObjectStoreChannel(self.pool, run.cfg.rollout.executor == "ray")
        self.channel.publish(rollout_version(start, self.staleness), weights)
        self.pending: Future | None = self._submit(start) if start < self.total else None
        self.inflight: dict[str, Any] | None = None

    def _submit(self, step: int) -> Future:
        return self.pool.submit(plan_step(self.run.cfg, step))

    def play(self, step: int) -> list[Trajectory]:
        """The submitted play of `step`."""
        return self.pending.result()

    def update(self, step: int, trajs: list[Trajectory]) -> dict[str, Any]:
        """Learner update; version step+1 (staleness 0) or version step (staleness 1) plays step+1."""
        nxt, self.inflight, sent = step + 1, None, 0
        if self.staleness == 1:  # version `step` plays step+1: kept for checkpoints (a run may be extended later)
            self.inflight = {"version": step, "weights": self.learner.weights()}
            if nxt < self.total:  # ... and played while the learner updates
                sent = self.channel.publish(step, self.inflight["weights"])
                self.pending = self._submit(nxt)
        stats = self.learner.update(trajs)
        if self.staleness == 0 and nxt < self.total:
            sent = self.channel.publish(nxt, self.learner.weights())
            self.pending = self._submit(nxt)
        stats["channel/weights_bytes"] = float(sent)
        stats["channel/trajectory_bytes"] = float(getattr(self.learner, "last_trajectory_bytes", 0))
        return stats

    def step_fields(self, step: int, trajs: list[Trajectory]) -> dict[str, Any]:
        """play_time_s as the pool measured it: the loop's own clock (kept as play_wait_s) sees only the wait
        for the submitted play, ~0 inline (submit plays at once) and when pipelining hid it."""
        return {"play_time_s": float(getattr(self.pool, "last_play_s", 0.0))}

    def postfix(self, stats: dict[str, Any]) -> dict[str, str]:
        """Reward and success of the step."""
        return {"reward": f"{stats['reward_mean']:.2f}", "success": f"{stats['success_rate']:.2f}"}

    def save(self, next_step: int) -> None:
        """Learner state (+ the in-flight version's weights with staleness 1)."""
        extra = {} if self.inflight is None else {"inflight": self.inflight}
        self.run.checkpoint(next_step, "rl", {**self.learner.state_dict(), **extra},
                            {"version": next_step, "staleness": self.staleness})


def run(run: RunState) -> dict[str, Any]:
    """The RL step loop, then the held-out numbers of the trained policy."""
    cfg = run.cfg
    write_topology(run.dir, topology(cfg, count_parameters(run.policy.model)))
    learner = make_learner(cfg, run.policy, run.ckpt_dir)
    try:
        start, weights = _resume_point(run, learner)
        steps = RLSteps(run, learner, start, weights)
        loop = Loop("rl", start, cfg.rl.steps, cfg.rl.checkpoint_every, run.dir / "rollouts", run.metrics,
                    f"continue with `steprl resume {run.dir}`")
        stats = run_steps(loop, steps, lambda: run.stop_requested)
    finally:
        learner.close()
    result = {"steps": cfg.rl.steps, "final_reward_mean": stats.get("reward_mean"),
              "final_train_success": stats.get("success_rate"), **skip_fields(run.metrics.path, "rl", cfg.rl.steps)}
    if result["mostly_skipped"]:
        log.warning("rl: the guards skipped %d of %d steps", result["skipped_steps"], cfg.rl.steps)
    result.update(success_fields(run.held_out("rl", "rl", cfg.rl.steps).to_dict()))
    return result
