"""`steprl/QA-v0`: question/answer items from a local JSONL or Parquet file, trainable from a config.

    env:
      id: steprl/QA-v0
      kwargs: {path: data/qa.jsonl, question_field: question, answer_field: answer,
               scorer: numeric, tools: [calc], held_out_fraction: 0.2, split_seed: 0}

Items are split into training and held-out sets by a seeded, stable rule: item i is held out iff
blake2b(split_seed, i) / 2**64 < held_out_fraction, so the split never depends on the file's other
items, the machine or Python's per-process string hashing. Episodes with env seeds below 2**31 (the project's training
seeds) draw training items; seeds at or above it (held-out evaluation seeds) draw held-out items.
Scorers: `exact` (whitespace-stripped equality), `numeric` (equal as numbers, 1e-6 relative), or
`module:fn` called as fn(prediction, gold) -> float in [0, 1].
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steprl.envs.adapters import QAEnv, exact_match
from steprl.envs.base import Task
from steprl.envs.tools import get_tool

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


def read_items(path: str | Path, question_field: str, answer_field: str) -> list[tuple[str, Any]]:
    """(question, answer) pairs from a .jsonl/.json-lines or .parquet file, in file order.

    JSON lines are read as UTF-8 (a leading byte-order mark is dropped), never in the locale's encoding,
    and split on "\\n" only: U+2028, U+2029 and U+0085 are legal inside JSON strings. The question must be
    a string and the answer must not be null; anything else is a ValueError naming the file and line.
    """
    return [(q, a) for _, q, a in _parse(Path(path), Path(path).read_bytes(), question_field, answer_field)]


def _parse(path: Path, data: bytes, question_field: str, answer_field: str) -> list[tuple[int, str, Any]]:
    """(line or row number, question, answer) of every item in `data`, the bytes of `path`."""
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        rows = list(enumerate(pq.read_table(pa.BufferReader(data)).to_pylist(), 1))
        where = f"{path}: row "
    else:
        rows, where = list(_json_lines(path, data)), f"{path}:"
    items = []
    for n, row in rows:
        if not isinstance(row, dict) or question_field not in row or answer_field not in row:
            raise ValueError(f"{where}{n}: lacks {question_field!r} or {answer_field!r}")
        question, answer = row[question_field], row[answer_field]
        for name, value in ((question_field, question), (answer_field, answer)):
            if value is None:
                raise ValueError(f"{where}{n}: {name!r} is null; every item needs a question and an answer")
        if not isinstance(question, str):
            raise ValueError(f"{where}{n}: {question_field!r} must be a string, got {type(question).__name__}")
        items.append((n, question, answer))
    return items


def _json_lines(path: Path, data: bytes) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line of UTF-8 `data`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (byte {data[e.start]:#04x}); save it as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None


def held_out(split_seed: int, index: int, fraction: float) -> bool:
    """Whether item `index` is held out: a stable blake2b draw keyed by (split_seed, index)."""
    digest = hashlib.blake2b(f"{int(split_seed)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


class QAFileEnv(QAEnv):
    """QAEnv over a file's items, split into training and held-out items by env seed."""

    def __init__(self, path: str, question_field: str = "question", answer_field: str = "answer",
                 scorer: str = "exact", tools: Sequence[str] = (), held_out_fraction: float = 0.2,
                 split_seed: int = 0, **kwargs: Any) -> None:
        for t in tools:
            if get_tool(t) is None:
                raise ValueError(f"unknown tool {t!r}")
        if not 0 <= held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
        items = read_items(path, question_field, answer_field)
        super().__init__(items, score_fn=load_scorer(scorer), tools=tools, **kwargs)
        self.held = [i for i in range(len(items)) if held_out(split_seed, i, held_out_fraction)]
        self.train = [i for i in range(len(items)) if i not in set(self.held)]
        if not self.train or (held_out_fraction > 0 and not self.held):
            raise ValueError(f"{path}: {len(items)} items leave an empty split at held_out_fraction "
                             f"{held_out_fraction}; add items or change the fraction")

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
