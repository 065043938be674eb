"""The stages of a run, in the order a config may list them. Each is `run(run: RunState) -> dict`
(its summary); stages use `steprl.run` and the library, never each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from steprl.run.loop.state import RunState
from steprl.stages import distill, eval, rl, warmup

Stage = Callable[[RunState], dict[str, Any]]

STAGES: dict[str, Stage] = {"warmup": warmup.run, "rl": rl.run, "distill": distill.run, "eval": eval.run}
"""Stage name -> its function; the pipeline runs `cfg.stages` through this mapping."""
