"""Rollout pools built from a run's config: the policy's pool and a second pool for another model."""

from __future__ import annotations

from dataclasses import replace

from steprl.agents.policy import Policy
from steprl.config import Config
from steprl.rollout.workers import RolloutPool, WorkerSpec
from steprl.run.kernels import worker_env


def worker_spec(cfg: Config, policy: Policy) -> WorkerSpec:
    """What every rollout worker of `policy` needs to build itself (picklable)."""
    return WorkerSpec(policy.model.config, policy.tokenizer, dict(cfg.env.kwargs), cfg.rollout.sampling,
                      cfg.rollout.worker_threads, cfg.rollout.fast_forward, backend=cfg.rollout.backend,
                      device=worker_device(cfg), dtype=cfg.rollout.dtype)


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
    return RolloutPool(worker_spec(cfg, policy), rcfg, cfg.ray.address, cfg.ray.num_cpus, worker_env())
