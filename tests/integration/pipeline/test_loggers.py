"""A smoke run with every logger on, interrupted and resumed, read back from each backend's own store.

Real libraries in their offline or local modes (W&B offline, trackio's local SQLite, MLflow's SQLite store in the
run directory, TensorBoard event files); skipped when one is not installed (`pip install 'steprl[test]'` has them).
The resume starts from the checkpoint before the last (the last is torn), so it plays step 2 again: every backend
must hold steps 0..3 once each, in one run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

for lib in ("wandb", "trackio", "mlflow", "tensorboard", "sqlalchemy", "alembic"):
    pytest.importorskip(lib)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "run"))
import wandb_records  # noqa: E402  (tests/run/wandb_records.py)

pytestmark = pytest.mark.slow
LOGGERS = "run.loggers=[jsonl,tensorboard,wandb,trackio,mlflow]"
SMALL = ["stages=[warmup,rl]", "warmup.steps=4", "rl.checkpoint_every=2", "eval.episodes=4", "eval.micro_batch=4",
         "run.log_episodes=3"]


def _steprl(args: list[str], env: dict[str, str]) -> None:
    res = subprocess.run([sys.executable, "-m", "steprl.cli", *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("loggers")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_", "TRACKIO_"))}
    env.update(WANDB_MODE="offline", WANDB_CONFIG_DIR=str(root / "wandb-config"),
               WANDB_CACHE_DIR=str(root / "wandb-cache"), WANDB_DATA_DIR=str(root / "wandb-data"),
               TRACKIO_DIR=str(root / "trackio"))
    _steprl(["train", "smoke", f"run.root={root}", "run.name=logged", "rl.steps=3", LOGGERS, *SMALL], env)
    run = root / "logged"
    (run / "checkpoints/step_000003/MANIFEST.json").unlink()  # torn: resume starts at step 2, played again
    _steprl(["resume", str(run), "rl.steps=4"], env)
    return run, root


def test_metrics_jsonl_holds_each_step_once(resumed_run):
    run, _ = resumed_run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "rl"] == [0, 1, 2, 3]


def test_wandb_offline_one_run_id_each_step_once_tables_and_held_out_points(resumed_run):
    run, _ = resumed_run
    run_id = json.loads((run / "trackers.json").read_text())["wandb"]["id"]
    logs = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 2 and all(wandb_records.run_ids(p) == {run_id} for p in logs)  # two sessions, one run
    rows = [r for p in logs for r in wandb_records.history(p)]
    assert [r["rl/step"] for r in rows if "rl/reward_mean" in r] == [0, 1, 2, 3]
    tables = [r for r in rows if "rl/episodes" in r]
    assert [r["rl/step"] for r in tables] == [0, 1, 2, 3]
    assert {(t["rl/episodes"]["_type"], t["rl/episodes"]["nrows"]) for t in tables} == {("table-file", 3)}
    assert [r["rl/step"] for r in rows if "rl/heldout/rl/success_ci_high" in r] == [3, 4]
    table_files = sorted(run.glob("wandb/offline-run-*/files/media/table/rl/episodes_*.table.json"))
    first = json.loads(table_files[0].read_text())
    assert first["columns"] == ["index", "task", "transcript", "reward", "success", "tool_calls", "digest"]
    assert len(first["data"]) == 3 and all("agent: " in row[2] for row in first["data"])


def test_mlflow_local_store_one_run_each_step_once_params_and_episode_tables(resumed_run):
    from mlflow import MlflowClient

    from steprl.run.reporting.trackers.mlflow_tracker import local_uri

    run, _ = resumed_run
    client = MlflowClient(tracking_uri=local_uri(run))
    exp = client.get_experiment_by_name("steprl")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [json.loads((run / "trackers.json").read_text())["mlflow"]["run_id"]]
    run_id = runs[0].info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "rl/reward_mean")] == [0, 1, 2, 3]
    assert [m.step for m in client.get_metric_history(run_id, "rl/heldout/rl/success")] == [3, 4]
    assert runs[0].data.params["rl.steps"] == "3" and runs[0].data.params["run.name"] == "logged"
    files = [f.path for f in client.list_artifacts(run_id, "episodes/rl")]
    assert files == [f"episodes/rl/step_{s:06d}.json" for s in range(4)]
    table = json.loads((Path(client.download_artifacts(run_id, files[0]))).read_text())
    assert table["columns"][:2] == ["index", "task"] and len(table["data"]) == 3


def test_trackio_local_store_one_run_each_step_once(resumed_run):
    _, root = resumed_run
    db = sqlite3.connect(root / "trackio" / "steprl.db")
    rows = db.execute("select run_id, step, metrics from metrics where run_name = 'logged' order by id").fetchall()
    assert len({r[0] for r in rows}) == 1
    metrics = [(step, json.loads(m)) for _, step, m in rows]
    assert [s for s, m in metrics if "rl/reward_mean" in m] == [0, 1, 2, 3]
    tables = [m["rl/episodes"] for _, m in metrics if "rl/episodes" in m]
    assert len(tables) == 4 and len(tables[0]["_value"]) == 3 and tables[0]["_value"][0]["task"]
    assert db.execute("select count(*) from configs where run_name = 'logged'").fetchone() == (1,)


def test_tensorboard_events_each_step_once_and_episode_text(resumed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = resumed_run
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("rl/reward_mean")] == [0, 1, 2, 3]
    assert [e.step for e in acc.Scalars("rl/heldout/rl/success")] == [3, 4]
    assert [e.step for e in acc.Tensors("rl/episodes/text_summary")] == [0, 1, 2, 3]
