"""The `eval` stage: the final policy on the run's held-out seeds; after `distill`, teacher and student side by side.

Both policies play the same eval seeds on the same pool layout and threads, interleaved
`eval.timing_repeats` times: success and the other numbers come from the first play (every repeat must
give the same trajectories), generated tokens/s from the fastest, so the speed ratio of the two is
not at the mercy of one noisy sub-second play.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from steprl.agents.policy import load_policy
from steprl.errors import SteprlError
from steprl.rollout.workers import RolloutPool
from steprl.run.loop.evaluate import EvalResult, HeldOut, evaluate, format_table, success_fields
from steprl.run.loop.pools import make_pool
from steprl.run.loop.state import RunState

log = logging.getLogger(__name__)


def run(run: RunState) -> dict[str, Any]:
    """Held-out evaluation of the final policy; after a distill stage, the teacher and the student side by side."""
    cfg = run.cfg
    entries = [("teacher (rl policy)", run.get_pool(), run.policy.model)]
    distilled = run.summary.get("stages", {}).get("distill", {})
    s_pool = None
    try:
        if "distill" in cfg.stages and distilled.get("final_checkpoint"):
            student = load_policy(Path(distilled["final_checkpoint"]) / "model")
            s_pool = make_pool(cfg, student, reserve_cpus=False)
            entries.append(("student (distilled)", s_pool, student.model))
        rows = timed_evaluations(HeldOut.from_config(cfg), entries, cfg.eval.timing_repeats)
    finally:
        if s_pool is not None:
            s_pool.close()
    for r in rows:  # the final table's policies as held-out points of their own stage
        run.metrics.log_eval(r.point("eval", 0))
    teacher = rows[0]
    result = success_fields(teacher.to_dict())
    earlier = earlier_rows(run.summary)
    result.update(policies=[r.to_dict() for r in rows], table=format_table(earlier + rows),
                  timing_repeats=cfg.eval.timing_repeats, earlier=[r.to_dict() for r in earlier])
    if len(rows) == 2:
        t, st = rows
        result["student_vs_teacher"] = {"success_ratio": st.success / t.success if t.success > 0 else None,
                                        "speedup": st.tokens_per_s / t.tokens_per_s if t.tokens_per_s > 0 else None,
                                        "param_ratio": st.params / t.params}
    log.info("held-out evaluation: %s", ", ".join(f"{r.policy} {r.success:.3f}" for r in rows))
    return result


def earlier_rows(summary: dict[str, Any]) -> list[EvalResult]:
    """The warm-up stage's held-out rows (the pretrained base model before it, the warm-up policy after it),
    measured then on the same seeds, so the table reads base -> warm-up -> trained -> student."""
    warm = summary.get("stages", {}).get("warmup", {})
    rows = []
    for key in ("base", "held_out"):
        if isinstance(warm.get(key), dict):
            row = dict(warm[key])
            row["success_ci"] = tuple(row["success_ci"])
            rows.append(EvalResult(**row))
    return rows


def timed_evaluations(held_out: HeldOut, entries: list[tuple[str, RolloutPool, torch.nn.Module]],
                      repeats: int) -> list[EvalResult]:
    """EvalResults of each (name, pool, model), played `repeats` times interleaved; the fastest wall kept.

    The numbers come from the first play (every repeat must give the same trajectories), the generated
    tokens/s from the fastest, so a speed ratio is not at the mercy of one noisy sub-second play.
    """
    first: list[Any] = [None] * len(entries)
    digests: list[list[str]] = [[] for _ in entries]
    tokens = [0] * len(entries)
    best = [float("inf")] * len(entries)
    for _ in range(repeats):
        for i, (name, pool, model) in enumerate(entries):
            res, trajs = evaluate(pool, model, name, held_out)
            if first[i] is None:
                first[i], digests[i], tokens[i] = (
                    res,
                    [t.digest for t in trajs],
                    sum(t.num_action_tokens for t in trajs),
                )
            elif [t.digest for t in trajs] != digests[i]:
                raise SteprlError(
                    f"evaluation of {name} gave different trajectories when repeated: determinism is broken"
                )
            best[i] = min(best[i], res.wall_s)
    return [replace(r, wall_s=w, tokens_per_s=n / max(w, 1e-9)) for r, w, n in zip(first, best, tokens)]
