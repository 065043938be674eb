"""Rollout pools built from a run's config: the policy's pool and a second pool for another model."""

from __future__ import annotations

from dataclasses import replace

from steprl.agents.lora import base_weights, is_lora, lora_config_of
from steprl.agents.policy import Policy
from steprl.config import Config
from steprl.rollout.workers import RolloutPool, WorkerSpec
from steprl.run.machine.kernels import worker_env


def worker_spec(cfg: Config, policy: Policy) -> WorkerSpec:
    """What every rollout worker of `policy` needs to build itself (picklable)."""
    return WorkerSpec(policy.model.config, policy.tokenizer, dict(cfg.env.kwargs), cfg.rollout.sampling,
                      cfg.rollout.worker_threads, cfg.rollout.fast_forward, backend=cfg.rollout.backend,
                      device=worker_device(cfg), dtype=cfg.rollout.dtype,
                      lora=lora_config_of(policy.model) if is_lora(policy.model) else None)


def worker_device(cfg: Config) -> str:
    """The rollout workers' device: the run's, when they are given a GPU (inline in a CUDA driver, or Ray actors
    with rollout.num_gpus_per_worker > 0); cpu otherwise."""
    gpu = cfg.rollout.executor == "inline" or cfg.rollout.num_gpus_per_worker > 0
    return "cuda" if cfg.run.device == "cuda" and gpu else "cpu"


def make_pool(cfg: Config, policy: Policy, reserve_cpus: bool = True) -> RolloutPool:
    """A rollout pool for `policy`'s architecture under the run's executor and Ray settings.

    `reserve_cpus=False` is for a second pool that never plays at the same time as the first (the
    distillation student's): with Ray its actors reserve no CPU, since the first pool already holds the
    configured CPUs and reserving more would leave the second pool's actors pending.
    """
    rcfg = cfg.rollout
    if not reserve_cpus and rcfg.executor != "inline":
        rcfg = replace(rcfg, num_cpus_per_worker=0.0)
    pool = RolloutPool(worker_spec(cfg, policy), rcfg, cfg.ray.address, cfg.ray.num_cpus, worker_env())
    if is_lora(policy.model):  # the frozen base once; each policy version then sends the adapter alone
        pool.set_base(base_weights(policy.model))
    return pool


class LazyPool:
    """A second pool built on first use, so its Ray actors do not start while this process trains.

    Ray starts worker processes at niceness 15; a pool made before a warm-up spends that whole warm-up
    importing torch and transformers in the background, a few percent of a core at a time, and every
    slice it takes stalls the warm-up's two OpenMP threads at their next barrier. Measured (quickstart
    student warm-up, 2 cores, AMD EPYC): 35 ms a step with the student's pool starting alongside, 27 ms
    without.
    """

    def __init__(self, cfg: Config, policy: Policy) -> None:
        """A pool for `policy` that reserves no CPUs (it never plays while the run's own pool plays)."""
        self.cfg, self.policy = cfg, policy
        self.pool: RolloutPool | None = None

    def get(self) -> RolloutPool:
        """The pool, built now if this is the first call."""
        if self.pool is None:
            self.pool = make_pool(self.cfg, self.policy, reserve_cpus=False)
        return self.pool

    def close(self) -> None:
        """Stop the pool's workers if it was ever built."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
