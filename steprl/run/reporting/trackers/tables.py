"""Plain-text renderings shared by the backends that have no table or config type of their own."""

from __future__ import annotations

import json
from typing import Any

from steprl.run.reporting.trackers.base import EpisodeRow


def markdown_table(rows: list[EpisodeRow]) -> str:
    """The rows as a Markdown table (TensorBoard's text plugin renders it); newlines become <br>."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", "<br>")

    head = "| " + " | ".join(EpisodeRow.COLUMNS) + " |"
    rule = "|" + "---|" * len(EpisodeRow.COLUMNS)
    return "\n".join([head, rule] + ["| " + " | ".join(cell(v) for v in r.cells()) + " |" for r in rows])


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'rl.steps': '45', ...}: nested mappings joined with '.', values as text (lists as JSON)."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v)
    return out
