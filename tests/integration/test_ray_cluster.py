"""A real two-node Ray cluster: the smoke preset with ray.address, 2 rollout workers and learner.world_size=2
gives the same rollouts and final weights as the inline world-size-1 run.

The test starts a head (127.0.0.1, a free port, its own temp dir) and a second node with `ray start`, and
stops only the processes it started (found by its temp dir and port; `ray stop` would stop every Ray here).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from steprl.config import load_config
from steprl.pipeline import train

pytestmark = pytest.mark.slow
RUN = ["stages=[warmup,rl]", "rl.steps=3", "rl.checkpoint_every=3", "learner.micro_batch=2", "warmup.cache=false",
       "learner.threads_per_rank=1", "learner.cpus_per_rank=0.5", "learner.entropy_coef=0.05", "learner.lr=3e-3"]
RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` CLI of this interpreter (no script in every venv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ours(marks: list[str]) -> list[int]:
    """Pids whose command line names one of `marks` (this test's temp dir or GCS address)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in marks):
            pids.append(int(d.name))
    return pids


def _stop(marks: list[str]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _ours(marks):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1.0)


@pytest.fixture
def cluster():
    """(address) of a head + one more node, torn down by pid afterwards."""
    port, temp = _free_port(), tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths are long
    addr = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    marks = [temp, addr]
    try:
        subprocess.run([*RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--temp-dir={temp}",
                        "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                       check=True, env=env, capture_output=True, timeout=120)
        subprocess.run([*RAY, "start", f"--address={addr}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                        "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=120)
        yield addr
    finally:
        _stop(marks)
        shutil.rmtree(temp, ignore_errors=True)


def _digest(run_dir: Path) -> dict[str, str]:
    files = [run_dir / "checkpoints/step_000003/model/model.safetensors", *sorted((run_dir / "rollouts").glob("*.gz"))]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_cluster_run_equals_inline_world_size_1(cluster, tmp_path) -> None:
    train(load_config("smoke", [f"run.root={tmp_path}", "run.name=inline", *RUN]))
    cmd = [sys.executable, "-m", "steprl.cli", "train", "smoke", f"run.root={tmp_path}", "run.name=cluster", *RUN,
           f"ray.address={cluster}", "rollout.executor=ray", "rollout.workers=2", "learner.world_size=2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _digest(tmp_path / "cluster") == _digest(tmp_path / "inline")
    assert (tmp_path / "cluster" / "topology.json").is_file()
