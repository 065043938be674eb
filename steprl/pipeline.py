"""`steprl train` / `steprl resume`: run the config's stages in order, resumable at any step.

    warmup  SFT on the env's expert demonstrations (cached per config hash), checkpoint step 0
    rl      plan -> play on the pool -> learner update -> record -> log -> checkpoint
    distill compress the policy into a smaller student (its own run directory under distill/)
    eval    held-out success of the final policy

Held-out success is measured after each training stage on the same 'eval'-stream seeds and
written to summary.json. Ctrl-C finishes the current step, checkpoints and stops; a second
Ctrl-C abandons the step (the run resumes from its newest complete checkpoint).
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steprl.agents.model import count_parameters
from steprl.agents.policy import Policy, build_policy, load_policy, save_policy
from steprl.checkpoint import Checkpoint, latest_good, prune, save_checkpoint
from steprl.config import Config
from steprl.demos import DemoMemo
from steprl.metrics import MetricsLogger
from steprl.rollout.workers import RolloutPool, WorkerSpec
from steprl.run_dir import create_run_dir, read_summary, write_summary
from steprl import stages

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """Everything the stages share."""

    cfg: Config
    dir: Path
    policy: Policy
    metrics: MetricsLogger
    summary: dict[str, Any]
    pool: RolloutPool | None = None
    stop_requested: bool = False
    demo_memo: DemoMemo = field(default_factory=DemoMemo)
    """Warm-up demonstration batches built in this run (the student's warm-up reuses the teacher's)."""
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def ckpt_dir(self) -> Path:
        """checkpoints/ of this run."""
        return self.dir / "checkpoints"

    def get_pool(self) -> RolloutPool:
        """The rollout pool, built on first use (Ray starts here)."""
        if self.pool is None:
            spec = WorkerSpec(self.policy.model.config, self.policy.tokenizer, dict(self.cfg.env.kwargs),
                              self.cfg.rollout.sampling, self.cfg.rollout.worker_threads, self.cfg.rollout.fast_forward,
                              backend=self.cfg.rollout.backend)
            self.pool = RolloutPool(spec, self.cfg.rollout, self.cfg.ray.address, self.cfg.ray.num_cpus)
        return self.pool

    def checkpoint(self, step: int, stage: str, learner_state: Any, extra: dict[str, Any] | None = None) -> Path:
        """Atomic checkpoint of the policy + learner state, then prune and redraw plots."""
        path = save_checkpoint(self.ckpt_dir, step, lambda d: save_policy(self.policy, d), learner_state,
                               {"stage": stage, **(extra or {})})
        prune(self.ckpt_dir, self.cfg.rl.keep_last, self.cfg.rl.keep_every, protect=(0,))
        self.metrics.plot()
        self.summary["final_checkpoint"] = str(path)
        write_summary(self.dir, self.summary)
        return path


def setup_torch(cfg: Config) -> None:
    """Fixed thread count and deterministic algorithms (NUMERICS A5)."""
    torch.set_num_threads(cfg.run.threads)
    torch.use_deterministic_algorithms(True)


def train(cfg: Config) -> dict[str, Any]:
    """Create the run directory and run every stage; returns summary.json's content."""
    setup_torch(cfg)
    run_dir = create_run_dir(cfg)
    policy = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
    state = RunState(cfg, run_dir, policy, MetricsLogger(run_dir), read_summary(run_dir))
    state.summary["params"] = count_parameters(policy.model)
    return _run_stages(state, checkpoint=None)


def resume(run_dir: Path, cfg: Config) -> dict[str, Any]:
    """Continue a run from its newest complete checkpoint (or from scratch if it has none)."""
    setup_torch(cfg)
    ck = latest_good(run_dir / "checkpoints")
    if ck is None:
        log.warning("%s has no complete checkpoint: starting its stages from the beginning", run_dir)
        policy = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
    else:
        policy = load_policy(ck.model_dir)
        log.info("resuming %s from %s", run_dir.name, ck.path.name)
    state = RunState(cfg, run_dir, policy, MetricsLogger(run_dir), read_summary(run_dir))
    return _run_stages(state, checkpoint=ck)


def completed_stages(state: RunState, checkpoint: Checkpoint | None) -> set[str]:
    """Stages that need not run again: those recorded complete, up to the first one the checkpoint reopens."""
    order = state.cfg.stages
    done = set(state.summary.get("completed", []))
    if checkpoint is not None and checkpoint.state.get("stage") == "warmup":
        done.add("warmup")
    if "rl" in order and (checkpoint is None or checkpoint.state.get("stage") in ("warmup", "rl")):
        rl_done = checkpoint is not None and checkpoint.state.get("stage") == "rl" and checkpoint.step >= state.cfg.rl.steps
        if not rl_done:  # rl (re)opens: it and every later stage run again
            done -= set(order[order.index("rl"):])
    return done


def _run_stages(state: RunState, checkpoint: Checkpoint | None) -> dict[str, Any]:
    """Run the stages not yet complete, with Ctrl-C turned into a clean stop."""
    done = completed_stages(state, checkpoint)
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        if state.stop_requested:
            raise KeyboardInterrupt
        state.stop_requested = True
        log.warning("Ctrl-C: finishing the current step, then checkpointing (Ctrl-C again to abandon it)")

    signal.signal(signal.SIGINT, on_sigint)
    try:
        for name in state.cfg.stages:
            if name in done:
                continue
            t0 = time.perf_counter()
            result = getattr(stages, f"run_{name}")(state, checkpoint)
            result["wall_s"] = round(time.perf_counter() - t0, 2)
            state.summary.setdefault("stages", {})[name] = result
            state.summary["completed"] = sorted(done | {name}, key=state.cfg.stages.index)
            done.add(name)
            write_summary(state.dir, state.summary)
        state.summary["wall_s"] = round(time.perf_counter() - state.t_start, 2)
        write_summary(state.dir, state.summary)
        return state.summary
    finally:
        signal.signal(signal.SIGINT, previous)
        state.metrics.close()
        if state.pool is not None:
            state.pool.close()
