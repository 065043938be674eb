"""The `warmup` stage: supervised training on the env's expert demonstrations, then checkpoint step 0."""

from __future__ import annotations

from typing import Any

from steprl.run.evaluate import success_fields
from steprl.run.sft import warm_up
from steprl.run.state import RunState


def run(run: RunState) -> dict[str, Any]:
    """SFT on expert demonstrations (or reuse a cached identical warm-up), checkpoint step 0, measure held-out."""
    losses, cached_from = warm_up(run, run.policy, "warmup")
    run.checkpoint(0, "warmup", {}, {"version": 0})
    result = {"steps": run.cfg.warmup.steps, "final_loss": losses[-1] if losses else None, "cached_from": cached_from}
    result.update(success_fields(run.held_out("warmup", "rl", 0).to_dict()))
    return result
