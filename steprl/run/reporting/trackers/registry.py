"""`run.loggers` names -> backend modules, imported only when listed; the install check before a run starts."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steprl.errors import ConfigError
from steprl.run.reporting.trackers.base import Tracker


@dataclass(frozen=True)
class Backend:
    """Where a backend's tracker class lives and what it needs installed."""

    module: str
    cls: str
    packages: tuple[str, ...]
    """Top-level modules that must be importable."""
    extra: str
    """The pyproject extra that installs them."""


BACKENDS = {
    "tensorboard": Backend("steprl.run.reporting.trackers.tensorboard_tracker", "TensorBoardTracker", ("tensorboard",),
                           "tensorboard"),
    "wandb": Backend("steprl.run.reporting.trackers.wandb_tracker", "WandbTracker", ("wandb",), "wandb"),
    "trackio": Backend("steprl.run.reporting.trackers.trackio_tracker", "TrackioTracker", ("trackio",), "trackio"),
    "mlflow": Backend("steprl.run.reporting.trackers.mlflow_tracker", "MlflowTracker",
                      ("mlflow", "sqlalchemy", "alembic"), "mlflow"),
}
"""Every logger but `jsonl` (always on, steprl/run/reporting/metrics.py)."""


def check_installed(names: list[str]) -> None:
    """ConfigError naming the first listed logger whose packages are missing and the extra that installs them."""
    for name in names:
        backend = BACKENDS.get(name)
        if backend is None:
            continue
        missing = [p for p in backend.packages if importlib.util.find_spec(p) is None]
        if missing:
            raise ConfigError(f"config key 'run.loggers': {name} needs {', '.join(missing)}, which is not installed: "
                              f"pip install 'steprl[{backend.extra}]' (or drop {name} from run.loggers)")


def open_trackers(names: list[str], run_dir: Path, project: str, run_name: str,
                  config: dict[str, Any]) -> list[Tracker]:
    """One started tracker per listed backend, each given the config; resumes the backend's run when
    `<run>/trackers.json` names one."""
    check_installed(names)
    out: list[Tracker] = []
    try:
        for name in names:
            if name in BACKENDS:
                backend = BACKENDS[name]
                cls = getattr(importlib.import_module(backend.module), backend.cls)
                out.append(cls(Path(run_dir), project, run_name, config))
    except BaseException:
        for t in out:
            t.close()
        raise
    return out
