"""MLflow: to MLFLOW_TRACKING_URI when set, else a SQLite store in the run directory (`<run>/mlflow.db`,
artifacts in `<run>/mlflow-artifacts/`; `mlflow ui --backend-store-uri sqlite:///<run>/mlflow.db` shows it).
MLflow's file store (`file:./mlruns`) refuses to open since MLflow 3 unless MLFLOW_ALLOW_FILE_STORE is set, so
the local default is SQLite. The MLflow run id is kept in `<run>/trackers.json`; a resume reopens that run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from steprl.run.reporting.trackers.base import EpisodeRow, EvalPoint
from steprl.run.reporting.trackers.identity import read_identity, write_identity
from steprl.run.reporting.trackers.tables import flatten

BATCH = 1000
"""Metrics per `log_batch` call (MLflow's limit)."""


def local_uri(run_dir: Path) -> str:
    """The tracking URI of a run without MLFLOW_TRACKING_URI: SQLite in the run directory."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


class MlflowTracker:
    """An `MlflowClient` run; params from the config (on the first session), episode tables as JSON artifacts."""

    name = "mlflow"

    def __init__(self, run_dir: Path, project: str, run_name: str, config: dict[str, Any]) -> None:
        from mlflow import MlflowClient

        known = read_identity(run_dir, self.name)
        uri = known.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or local_uri(run_dir)
        self.client = MlflowClient(tracking_uri=uri)
        if known:
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(project)
            if exp is not None:
                exp_id = exp.experiment_id
            else:
                local = not os.environ.get("MLFLOW_TRACKING_URI")
                art = (run_dir / "mlflow-artifacts").resolve().as_uri() if local else None
                exp_id = self.client.create_experiment(project, artifact_location=art)
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
            write_identity(run_dir, self.name, {"run_id": self.run_id, "tracking_uri": uri})
            params = [(k, v[:6000]) for k, v in flatten(config).items()]  # params are immutable: logged once
            from mlflow.entities import Param

            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params[i:i + 100]])
        self.client.log_dict(self.run_id, config, "config.json")

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + BATCH])

    def log_metrics(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        """The stage's metrics at `step` (MLflow keeps a history per key)."""
        self._log({f"{stage}/{k}": v for k, v in metrics.items()}, step)

    def log_eval(self, point: EvalPoint) -> None:
        """Success and its interval bounds at the point's step."""
        self._log(point.values(), point.step)

    def log_episodes(self, stage: str, step: int, rows: list[EpisodeRow]) -> None:
        """`episodes/<stage>/step_NNNNNN.json`: {"columns": [...], "data": [[...], ...]} (MLflow's table layout)."""
        table = {"columns": list(EpisodeRow.COLUMNS), "data": [r.cells() for r in rows]}
        self.client.log_dict(self.run_id, table, f"episodes/{stage}/step_{step:06d}.json")

    def close(self) -> None:
        """Mark the run finished (a resume sets it running again)."""
        self.client.set_terminated(self.run_id)
