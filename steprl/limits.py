"""Sane upper bounds on sizes: a typo such as `rollout.group_size=100000` or `rl.steps=10**23` is refused
before any work, with the bound and how to lift it (`run.allow_large=true`).

The bounds are far above anything the presets or a single machine use; they only catch values that
would run for days or exhaust memory without progress inside a step.
"""

from __future__ import annotations

from typing import Any

#: dotted key -> largest accepted value (without run.allow_large).
LIMITS: dict[str, int] = {
    "rollout.groups": 4096,
    "rollout.group_size": 1024,
    "rollout.workers": 1024,
    "rollout.micro_batch": 8192,
    "rollout.sampling.max_new_tokens": 1 << 16,
    "rollout.sampling.max_episode_tokens": 1 << 20,
    "rl.steps": 10**7,
    "warmup.steps": 10**7,
    "warmup.batch_size": 8192,
    "distill.steps": 10**7,
    "distill.student_warmup_steps": 10**7,
    "eval.episodes": 10**6,
}
#: Episodes one RL step may play (groups x group_size).
MAX_EPISODES_PER_STEP = 65536


def _get(cfg: Any, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def size_problems(cfg: Any) -> list[tuple[str, str]]:
    """(key, problem) for every size above its bound; none when `run.allow_large` is set."""
    if getattr(cfg.run, "allow_large", False):
        return []
    hint = "; set run.allow_large=true if you mean it"
    out = [(key, f"{value} is above the sane bound {bound}{hint}")
           for key, bound in LIMITS.items() if (value := _get(cfg, key)) > bound]
    n = cfg.rollout.groups * cfg.rollout.group_size
    if n > MAX_EPISODES_PER_STEP:
        out.append(("rollout.group_size", f"groups*group_size = {n} episodes per step is above the sane bound "
                                          f"{MAX_EPISODES_PER_STEP}{hint}"))
    return out
