"""Learning-rate multipliers: linear warm-up, then constant, linear or cosine decay.

A pure function of the step index, so the schedule needs no state beyond the step count
(which the learner saves) and resumes exactly.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Multiplier on the base lr for 0-based optimizer step `step`.

    Warm-up: (step + 1) / warmup_steps for step < warmup_steps. Afterwards progress
    p = (step - warmup_steps) / max(1, total_steps - warmup_steps), clamped to [0, 1]:
    constant -> 1; linear -> 1 - (1 - min_ratio) p; cosine -> min_ratio + (1 - min_ratio)(1 + cos(pi p)) / 2.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {SCHEDULES}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * p
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
