"""The typed state one run's stages share."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from steprl.agents.policy import Policy, save_policy
from steprl.config import Config
from steprl.rollout.workers import RolloutPool
from steprl.run.files.checkpoint import Checkpoint, prune, save_checkpoint
from steprl.run.files.run_dir import write_summary
from steprl.run.learning.weights import weights_fingerprint
from steprl.run.loop.demos import DemoMemo
from steprl.run.loop.evaluate import EvalResult, HeldOut, evaluate
from steprl.run.loop.pools import make_pool
from steprl.run.reporting.metrics import MetricsLogger

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """Everything the stages of one run share: config, directory, policy, metrics, summary, pool.

    Stages receive it and return their summary; they never call each other. `resume_from` is the
    checkpoint the run continues from (None for a fresh run).
    """

    cfg: Config
    dir: Path
    policy: Policy
    metrics: MetricsLogger
    summary: dict[str, Any]
    resume_from: Checkpoint | None = None
    pool: RolloutPool | None = None
    stop_requested: bool = False
    """Set by the first Ctrl-C: the step loop finishes its step, checkpoints and stops."""
    demo_memo: DemoMemo = field(default_factory=DemoMemo)
    """Warm-up demonstration batches built in this run (the student's warm-up reuses the teacher's)."""
    held_out_cache: dict[str, EvalResult] = field(default_factory=dict)
    """Held-out results by weights fingerprint: a policy is measured once per exact weights."""
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def ckpt_dir(self) -> Path:
        """checkpoints/ of this run."""
        return self.dir / "checkpoints"

    def get_pool(self) -> RolloutPool:
        """The policy's rollout pool, built on first use (Ray starts here)."""
        if self.pool is None:
            self.pool = make_pool(self.cfg, self.policy)
        return self.pool

    def checkpoint(self, step: int, stage: str, learner_state: Any, extra: dict[str, Any] | None = None) -> Path:
        """Atomic checkpoint of the policy + learner state, then prune, redraw plots if due, update summary.json."""
        path = save_checkpoint(self.ckpt_dir, step, lambda d: save_policy(self.policy, d), learner_state,
                               {"stage": stage, **(extra or {})})
        prune(self.ckpt_dir, self.cfg.rl.keep_last, self.cfg.rl.keep_every, protect=(0,))
        self.metrics.plot_if_due()
        self.summary["final_checkpoint"] = str(path)
        write_summary(self.dir, self.summary)
        return path

    def held_out(self, name: str, stage: str, step: int, metrics: MetricsLogger | None = None) -> EvalResult:
        """Greedy held-out numbers of the run's policy on its eval seeds, measured once per exact weights, and
        logged (to `metrics`, default the run's) as the point (`stage`, `step`) of a held-out series `name`."""
        metrics = metrics or self.metrics
        fingerprint = weights_fingerprint(self.policy.model)
        if fingerprint in self.held_out_cache:
            res = self.held_out_cache[fingerprint]
            log.info("held-out success after %s: %.3f (same weights as already measured)", name, res.success)
            metrics.log_eval(replace(res, policy=name).point(stage, step))
            return res
        res, _ = evaluate(self.get_pool(), self.policy.model, name, HeldOut.from_config(self.cfg))
        log.info("held-out success after %s: %.3f (%d episodes)", name, res.success, res.episodes)
        self.held_out_cache.clear()
        self.held_out_cache[fingerprint] = res
        metrics.log_eval(res.point(stage, step))
        return res
