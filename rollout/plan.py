"""What a step plays: `plan_step(cfg, step)` is a pure function of the config, the seed and the step.

`plan_distill` and `plan_eval` do the same for distillation steps and held-out episodes, and
`spec_micro_batches` cuts a step's specs into the fixed micro-batches workers play.

Group g of step N plays task `env_seed = derive(seed, "env", N, g)` (training half of the seed
space); its members differ only in `sample_key = derive(seed, "sample", N, index)`. Nothing
here depends on the number of workers, the wall clock or any mutable state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steprl.rollout.seeding import derive
from steprl.rollout.trajectory import EpisodeSpec

HALF = 1 << 31  # training env seeds lie in [0, 2**31), evaluation seeds in [2**31, 2**32)


def train_env_seed(seed: int, step: int, group: int) -> int:
    """Env seed of a training task (never equal to an evaluation seed)."""
    return derive(seed, "env", step, group) % HALF


def eval_env_seed(seed: int, i: int) -> int:
    """Env seed of held-out episode i, from the 'eval' stream, disjoint from training seeds."""
    return HALF + derive(seed, "eval", i) % HALF


def plan_step(cfg: Any, step: int) -> list[EpisodeSpec]:
    """The episodes of RL step `step`, in index order: groups x group_size specs.

    `cfg` needs `run.seed`, `env.id`, `rollout.groups` and `rollout.group_size`.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    seed, groups, size = cfg.run.seed, cfg.rollout.groups, cfg.rollout.group_size
    specs = []
    for g in range(groups):
        env_seed = train_env_seed(seed, step, g)
        for m in range(size):
            i = g * size + m
            specs.append(EpisodeSpec(step, i, g, m, cfg.env.id, env_seed, derive(seed, "sample", step, i)))
    return specs


def rollout_version(step: int, staleness: int) -> int:
    """The policy version that plays step `step`: `step - staleness`, never below 0.

    Version v is the weights after v learner updates. Staleness 0 plays step N with the weights
    that step N trains; staleness 1 plays it with the previous version, so step N+1 can be played
    while step N is learned. Always exactly this version, never "the newest available": the data
    stays a pure function of (config, seed, step).
    """
    return max(int(step) - int(staleness), 0)


def plan_distill(cfg: Any, step: int) -> list[EpisodeSpec]:
    """Episodes of distillation step `step`: groups x group_size specs from the 'distill' stream (pure).

    Env seeds lie in the training half [0, 2**31), so they never equal an evaluation seed.
    `cfg` needs `run.seed`, `env.id`, `rollout.groups` and `rollout.group_size`.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    seed, size = cfg.run.seed, cfg.rollout.group_size
    return [EpisodeSpec(step, g * size + m, g, m, cfg.env.id, derive(seed, "distill", 0, step, g) % HALF,
                        derive(seed, "distill", 1, step, g * size + m))
            for g in range(cfg.rollout.groups) for m in range(size)]


def plan_eval(seed: int, env_id: str, episodes: int, stream_step: int = -1) -> list[EpisodeSpec]:
    """Held-out episodes 0..episodes-1 (one per group), with sample keys from the 'eval' stream."""
    return [
        EpisodeSpec(stream_step, i, i, 0, env_id, eval_env_seed(seed, i), derive(seed, "eval", i, 1))
        for i in range(episodes)
    ]


def spec_micro_batches(specs: Sequence[EpisodeSpec], size: int) -> list[list[EpisodeSpec]]:
    """Split specs (sorted by index) into fixed micro-batches [k*size, (k+1)*size) by episode index."""
    if size <= 0:
        raise ValueError(f"micro-batch size must be positive, got {size}")
    ordered = sorted(specs, key=lambda s: s.index)
    return [ordered[k : k + size] for k in range(0, len(ordered), size)]


def assign_round_robin(num_micro_batches: int, workers: int) -> list[list[int]]:
    """A static micro-batch -> worker assignment (for display; the data never depends on it)."""
    return [list(range(w, num_micro_batches, workers)) for w in range(workers)]
