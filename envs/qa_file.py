"""`steprl/QA-v0`: question/answer items from a local JSONL or Parquet file, trainable from a config.

    env:
      id: steprl/QA-v0
      kwargs: {path: data/qa.jsonl, question_field: question, answer_field: answer,
               scorer: numeric, tools: [calc], held_out_fraction: 0.2, split_seed: 0}

`tools` names registered tools, or MCP servers whose tools are offered (`mcp:python server.py`; envs/mcp_tools.py).

Items are split into training and held-out sets by a seeded, stable rule keyed on the question text
(`envs/qa_data.py`): question q is held out iff blake2b(split_seed, q) / 2**64 < held_out_fraction, so the split
never depends on the file's other lines or their order, the machine or Python's per-process string hashing.
Exact copies of an item are one item; one question with two answers is an error naming both lines.
Episodes with env seeds below 2**31 (the project's training seeds) draw training items;
seeds at or above it (held-out evaluation seeds) draw held-out items.
Scorers: `exact` (whitespace-stripped equality), `numeric` (equal as numbers, 1e-6 relative), or
`module:fn` called as fn(prediction, gold) -> float in [0, 1].
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steprl.envs.adapters import QAEnv, exact_match
from steprl.envs.base import Task
from steprl.envs.mcp_tools import resolve_tools
from steprl.envs.qa_data import file_sha256, held_out, load_qa, read_items
from steprl.envs.tools import get_tool

__all__ = ["HELD_OUT_SEEDS", "QAFileEnv", "SCORERS", "held_out", "load_scorer", "make_reasoning_gym",
           "numeric_match", "read_items"]

SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")

HELD_OUT_SEEDS = 1 << 31
"""Env seeds at or above this are held-out evaluation seeds (the project's seed layout, docs/architecture.md)."""


def numeric_match(prediction: str, gold: Any) -> float:
    """1.0 iff both parse as numbers equal to 1e-6 relative (commas and surrounding spaces ignored)."""
    try:
        p, g = (float(str(x).replace(",", "").strip()) for x in (prediction, gold))
    except ValueError:
        return 0.0
    return 1.0 if math.isclose(p, g, rel_tol=1e-6, abs_tol=1e-9) else 0.0


SCORERS: dict[str, Callable[[str, Any], float]] = {"exact": exact_match, "numeric": numeric_match}


def load_scorer(name: str) -> Callable[[str, Any], float]:
    """A registered scorer by name, or a user function `module:fn`."""
    if name in SCORERS:
        return SCORERS[name]
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"scorer {name!r}: expected {', '.join(SCORERS)} or module:function")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise ValueError(f"scorer {name!r}: {module} has no function {attr!r}")
    return fn


class QAFileEnv(QAEnv):
    """QAEnv over a file's items, split into training and held-out items by env seed.

    `sha256`, when given, is the hash the file's bytes must have: a run's resolved config pins it
    (`pin_kwargs`, written to config.yaml as env.kwargs.sha256), so resume, replay and eval of that run refuse a
    file that changed since, instead of silently training or replaying on other data.
    """

    def __init__(self, path: str, question_field: str = "question", answer_field: str = "answer",
                 scorer: str = "exact", tools: Sequence[str] = (), held_out_fraction: float = 0.2,
                 split_seed: int = 0, sha256: str | None = None, **kwargs: Any) -> None:
        tools = resolve_tools(tools)  # an `mcp:` entry becomes its server's tools (envs/mcp_tools.py)
        for t in tools:
            if get_tool(t) is None:
                raise ValueError(f"unknown tool {t!r}")
        if not 0 <= held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
        if sha256 is not None and not SHA256_RE.match(str(sha256)):
            raise ValueError(f"sha256 must be 64 hex digits (the file's sha256), got {sha256!r}")
        data = load_qa(path, question_field, answer_field, split_seed, held_out_fraction)
        if sha256 is not None and data.sha256 != str(sha256).lower():
            raise ValueError(f"{Path(path).resolve()} changed since the run recorded it: its sha256 is {data.sha256}, "
                             f"the run's env.kwargs.sha256 is {sha256}; restore that file, or start a new run on it")
        super().__init__(data.items, score_fn=load_scorer(scorer), tools=tools, **kwargs)
        self.held, self.train = data.held, data.train
        if not self.train or (held_out_fraction > 0 and not self.held):
            raise ValueError(f"{path}: {len(data.items)} items leave an empty split at held_out_fraction "
                             f"{held_out_fraction}; add items or change the fraction")

    @staticmethod
    def pin_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
        """`kwargs` plus the sha256 of the file at `path` (a new run's config records the data it trains on).

        An explicit sha256 is kept; a missing or unreadable file is left for the env build to report.
        """
        path = kwargs.get("path")
        if kwargs.get("sha256") is not None or not isinstance(path, str | Path):
            return kwargs
        try:
            digest = file_sha256(path)
        except OSError:
            return kwargs
        return {**kwargs, "sha256": digest}

    def task_for_seed(self, seed: int) -> Task:
        """A training item for a training seed, a held-out item for a held-out seed (all items if none held)."""
        if self._index is not None:
            return super().task_for_seed(seed)
        pool = self.held if seed >= HELD_OUT_SEEDS and self.held else self.train
        i = pool[int(np.random.default_rng(int(seed)).integers(len(pool)))]
        question, gold = self.items[i]
        return Task(question, self.gold_text(gold), self.tool_names, {"gold": gold, "index": i})


def make_reasoning_gym(dataset: str = "basic_arithmetic", size: int = 500, seed: int = 0, **kwargs: Any) -> QAEnv:
    """Entry point of `steprl/ReasoningGym-v0`: a reasoning-gym dataset (optional extra `steprl[reasoning]`)."""
    from steprl.envs.adapters import reasoning_gym_env

    return reasoning_gym_env(dataset, size=size, seed=seed, **kwargs)
