"""`<run>/trackers.json`: each backend's run identity (W&B run id, MLflow run id, ...), so a resume continues the
same run in every backend instead of starting a second one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "trackers.json"


def read_identity(run_dir: Path, backend: str) -> dict[str, Any]:
    """What `backend` recorded for this run ({} for a fresh run or a backend newly listed)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get(backend, {}))


def write_identity(run_dir: Path, backend: str, identity: dict[str, Any]) -> None:
    """Record `backend`'s identity (atomically: a crash leaves the old file or the new one)."""
    path = Path(run_dir) / FILE
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[backend] = identity
    tmp = path.with_name(FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
