"""Shared helpers of the bench/ scripts: the benchmarked model sizes, result files, machine metadata.

Not a benchmark itself. Scripts run as `python bench/<name>.py`, so bench/ is on sys.path and
they import this module as `_common` (and `ceiling` for the compute ceiling).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from seeds import cpu_model  # one definition of "the machine" (model name and kernel flags) for every script

from steprl.agents.config import ModelConfig

RESULTS = Path(__file__).parent / "results"


def quickstart_model() -> ModelConfig:
    """The model section of configs/quickstart.yaml (as the preset resolves it)."""
    from steprl.config import load_config

    return load_config("quickstart").model


def ten_m_model() -> ModelConfig:
    """A ~10M-parameter Llama on the char vocabulary: 6 layers, hidden 320, 5 heads, MLP 1280 (9.87M params).

    (8 layers of the same width would be 13.1M; 6 keeps it at ~10M.)
    """
    return ModelConfig(arch="llama", layers=6, hidden=320, heads=5, kv_heads=5, intermediate=1280, max_positions=512)


def char_vocab() -> int:
    """Vocabulary size of steprl's offline character tokenizer (what every benchmarked model is sized to)."""
    from steprl.agents.tokenizer import build_char_tokenizer

    return len(build_char_tokenizer())


def param_count(mc: ModelConfig) -> int:
    """Parameters of `mc` built on the char vocabulary (tied embeddings counted once)."""
    from steprl.agents.model import build_model, count_parameters

    return count_parameters(build_model(mc, char_vocab(), 0))


MODELS = {"quickstart": quickstart_model, "10m": ten_m_model}
"""Benchmarked model sizes by name (`--models quickstart,10m`)."""


def model_configs(names: str) -> list[tuple[str, ModelConfig]]:
    """(name, ModelConfig) for a comma-separated list of MODELS keys."""
    out = []
    for n in [x.strip() for x in names.split(",") if x.strip()]:
        if n not in MODELS:
            raise SystemExit(f"unknown model {n!r}; choose from {', '.join(MODELS)}")
        out.append((n, MODELS[n]()))
    return out


def machine_meta(threads: int) -> dict[str, Any]:
    """What the numbers were measured on (versions, cores, threads, load average)."""
    import transformers

    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover - not on every platform
        load = (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json (indented) and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def markdown_table(rows: Sequence[dict[str, Any]], cols: Iterable[tuple[str, str, str]]) -> str:
    """A markdown table: cols are (key, header, format spec) triples, e.g. ("tok_s", "tok/s", ".0f")."""
    cols = list(cols)
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for k, _, f in cols:
            v = r.get(k, "")
            cells.append(format(v, f) if isinstance(v, (int, float)) and f else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
