"""The learner process killed (SIGKILL) mid-step and mid-checkpoint-write, or interrupted (SIGINT) mid-write:
`steprl resume` continues from the newest complete checkpoint and ends bitwise equal to an undisturbed run.

(SIGINT mid-step is tests/integration/pipeline/test_interrupt.py.)
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from digests import tree_digest
from relhelp import cli

from steprl.pipeline import resume, train
from steprl.run.files.checkpoint import latest_good
from steprl.run.files.run_dir import open_run_dir

pytestmark = pytest.mark.slow
RUN = ["rl.steps=6", "rl.checkpoint_every=2", "rollout.groups=4", "rollout.micro_batch=8", "warmup.cache=true",
       "eval.episodes=4", "eval.micro_batch=4", "run.threads=1"]

# Runs `steprl train` with a hook that signals this very process while checkpoint step_{STEP} is being written.
HOOKED = """
import os, signal, sys
import steprl.run.files.checkpoint as c
sig, step, where = getattr(signal, sys.argv[1]), sys.argv[2], sys.argv[3]
real = {"save_state": c.save_state, "_fsync_tree": c._fsync_tree}
fired = []
def hooked(name):
    def f(*a, **k):
        hit = f".tmp_step_{int(step):06d}" in str(a[1] if name == "save_state" else a[0])
        if hit and not fired:
            fired.append(1)
            os.kill(os.getpid(), sig)
        return real[name](*a, **k)
    return f
setattr(c, where, hooked(where))
from steprl.cli import main
raise SystemExit(main(["train", *sys.argv[4:]]))
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Shared run root (one warm-up cache)."""
    return tmp_path_factory.mktemp("kill")


@pytest.fixture(scope="module")
def baseline(root):
    """The undisturbed 6-step run."""
    from steprl.config import load_config

    train(load_config("smoke", [f"run.root={root}", "run.name=base", *RUN]))
    return root / "base"


def rl_rows(run_dir: Path) -> int:
    p = run_dir / "metrics.jsonl"
    if not p.is_file():
        return 0
    return sum(1 for line in p.read_text().splitlines() if '"stage": "rl"' in line)


def _resume_and_compare(run_dir: Path, baseline: Path) -> None:
    r = cli("resume", str(run_dir), cwd=run_dir.parent)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert tree_digest(run_dir, 6) == tree_digest(baseline, 6)
    assert rl_rows(run_dir) == 6


def test_sigkill_mid_step_then_resume_is_bitwise_identical(root, baseline):
    run_dir = root / "killed-step"
    proc = subprocess.Popen(
        [
            "nice",
            "-n",
            "19",
            sys.executable,
            "-m",
            "steprl.cli",
            "train",
            "smoke",
            f"run.root={root}",
            "run.name=killed-step",
            *RUN,
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while rl_rows(run_dir) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # lands inside step 3 or 4 (play / update / record)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    done = rl_rows(run_dir)
    assert 3 <= done < 6
    ck = latest_good(run_dir / "checkpoints")
    print(f"\nFIGURE sigkill-mid-step: killed after {done} logged steps, resumed from {ck.path.name}")
    _resume_and_compare(run_dir, baseline)


@pytest.mark.parametrize(
    "sig, where",
    [("SIGKILL", "save_state"), ("SIGKILL", "_fsync_tree"), ("SIGINT", "save_state")],
    ids=["sigkill-after-model-before-learner-state", "sigkill-manifest-written-not-renamed", "sigint-mid-write"],
)
def test_signal_while_writing_a_checkpoint_then_resume(root, baseline, sig, where):
    name = f"ck-{sig}-{where}".replace("_", "")
    run_dir = root / name
    step = 4 if sig == "SIGKILL" else 2
    r = subprocess.run(
        [
            "nice",
            "-n",
            "19",
            sys.executable,
            "-c",
            HOOKED,
            sig,
            str(step),
            where,
            "smoke",
            f"run.root={root}",
            f"run.name={name}",
            *RUN,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    ckdir = run_dir / "checkpoints"
    if sig == "SIGKILL":
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        torn = ckdir / f".tmp_step_{step:06d}"
        assert torn.is_dir() and not (ckdir / f"step_{step:06d}").exists()  # really killed mid-write
        assert latest_good(ckdir).step == 2  # the torn copy is never a candidate
        assert (ckdir / "latest").read_text().strip() == "step_000002"
    else:  # Ctrl-C during the write: the write completes, the run stops cleanly after it
        assert r.returncode == 130 and "steprl resume" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert latest_good(ckdir).step == 2 and rl_rows(run_dir) == 2
    print(f"\nFIGURE {sig}-in-{where}: exit {r.returncode}, newest complete checkpoint step_000002, resuming")
    _resume_and_compare(run_dir, baseline)
    assert not list(ckdir.glob(".tmp_step_*"))


def test_torn_and_manifestless_checkpoints_are_skipped_on_resume(root, baseline, tmp_path):
    run_dir = tmp_path / "torn"
    shutil.copytree(baseline, run_dir)
    ckdir = run_dir / "checkpoints"
    shutil.rmtree(ckdir / "step_000004")
    (ckdir / "step_000006" / "MANIFEST.json").unlink()  # a partial step_ directory without its commit marker
    shutil.copytree(ckdir / "step_000006", ckdir / ".tmp_step_000006")
    (ckdir / ".tmp_step_000006" / "learner.safetensors").write_bytes(b"torn")
    assert latest_good(ckdir).step == 2
    _, cfg = open_run_dir(run_dir)
    resume(run_dir, cfg)
    assert tree_digest(run_dir, 6) == tree_digest(baseline, 6)
    assert json.loads((ckdir / "step_000006" / "MANIFEST.json").read_text())["step"] == 6
