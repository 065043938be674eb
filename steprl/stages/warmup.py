"""The `warmup` stage: supervised training on the env's expert demonstrations, then checkpoint step 0.

A pretrained model (`model.path` set) is first measured as it came, on the same held-out seeds: the
base row of the eval table, so what warm-up and RL add is read against what the model could already do.
"""

from __future__ import annotations

from typing import Any

from steprl.run.loop.evaluate import success_fields
from steprl.run.loop.sft import warm_up
from steprl.run.loop.state import RunState


def run(run: RunState) -> dict[str, Any]:
    """Held-out numbers of a pretrained base model, SFT on expert demonstrations (or reuse a cached identical
    warm-up), checkpoint step 0, held-out numbers after it."""
    base = run.held_out("base (pretrained)", "warmup", 0).to_dict() if run.cfg.model.path is not None else None
    losses, cached_from = warm_up(run, run.policy, "warmup")
    run.checkpoint(0, "warmup", {}, {"version": 0})
    result = {"steps": run.cfg.warmup.steps, "final_loss": losses[-1] if losses else None, "cached_from": cached_from}
    after = run.held_out("warm-up (SFT)", "rl", 0)
    result.update(success_fields(after.to_dict()))
    result["held_out"] = after.to_dict()
    if base is not None:
        result["base"] = base
    return result
