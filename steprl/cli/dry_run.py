"""`steprl train --dry-run`: what a run would do, without doing it.

The resolved config, the stages in order, step 0's episodes with the task each one poses (bounded:
at most MAX_EPISODE_LINES lines, then a count), and how the micro-batches are really scheduled:
inline, one worker plays them in index order; with Ray, they are queued and each idle actor takes
the next, so no static assignment exists (and none is needed: the data never depends on it).
"""

from __future__ import annotations

from typing import Any

from steprl.config import to_yaml
from steprl.rollout.plan import plan_step, spec_micro_batches

MAX_EPISODE_LINES = 64
TASK_CHARS = 60


def scheduling_line(cfg: Any, micro_batches: int) -> str:
    """How step 0's micro-batches are played under the configured executor."""
    mb = cfg.rollout.micro_batch
    if cfg.rollout.executor == "inline":
        return (f"inline executor: 1 worker plays micro-batches 0..{micro_batches - 1} in index order "
                f"({mb} episodes each)")
    where = f"Ray cluster {cfg.ray.address}" if cfg.ray.address else "an embedded local Ray"
    return (f"ray executor: {micro_batches} micro-batches of {mb} queued; {cfg.rollout.workers} actors each take "
            f"the next when idle ({where}; a dead actor's micro-batch is queued again)")


def task_text(env: Any, seed: int) -> str:
    """The first observation of the episode `seed` poses, on one line, cut to TASK_CHARS."""
    obs, _info = env.reset(seed=seed)
    text = " ".join(str(obs).split())
    return text if len(text) <= TASK_CHARS else text[: TASK_CHARS - 3] + "..."


def dry_run_text(cfg: Any) -> str:
    """The resolved config, the stages, step 0's plan with task text, and the scheduling."""
    from steprl.run.loop.preflight import build_env

    specs = plan_step(cfg, 0)
    mbs = spec_micro_batches(specs, cfg.rollout.micro_batch)
    lines = ["# resolved config", to_yaml(cfg).rstrip(), "", "# stages: " + " -> ".join(cfg.stages),
             f"# step 0 plan: {len(specs)} episodes ({cfg.rollout.groups} groups x {cfg.rollout.group_size}), "
             f"{len(mbs)} micro-batches of {cfg.rollout.micro_batch}", scheduling_line(cfg, len(mbs)),
             "index group member env_seed   sample_key           micro_batch  task"]
    env = build_env(cfg.env.id, dict(cfg.env.kwargs))
    tasks: dict[int, str] = {}
    try:
        for s in specs[:MAX_EPISODE_LINES]:
            if s.env_seed not in tasks:
                tasks[s.env_seed] = task_text(env, s.env_seed)
            lines.append(f"{s.index:5d} {s.group:5d} {s.member:6d} {s.env_seed:10d} {s.sample_key:20d} "
                         f"{s.index // cfg.rollout.micro_batch:11d}  task: {tasks[s.env_seed]}")
    finally:
        env.close()
    if len(specs) > MAX_EPISODE_LINES:
        lines.append(f"... {len(specs) - MAX_EPISODE_LINES} more episodes")
    return "\n".join(lines)
