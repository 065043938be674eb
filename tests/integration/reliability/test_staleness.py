"""One-step-off-policy pipelining (rollout.staleness=1) keeps every determinism promise of staleness 0.

Step N is played with policy version N-1 (0 for steps 0 and 1) while the learner trains on step N-1:
the records name that version; inline, 1 and 2 Ray workers with random delays injected into the
workers and the learner give bitwise-identical runs; resume at a step boundary, after a torn
checkpoint and after Ctrl-C mid-step equals the uninterrupted run; `steprl replay` proves a
pipelined step token for token.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from digests import tree_digest

from steprl.learners.trainer import Trainer
from steprl.pipeline import resume, train
from steprl.rollout.plan import rollout_version
from steprl.rollout.store import read_step
from steprl.run.files.run_dir import open_run_dir

# an entropy bonus makes every step change the weights even while all rewards are equal (untrained policy)
PIPE = ["rollout.staleness=1", "rl.steps=4", "rl.checkpoint_every=1", "learner.entropy_coef=0.01"]


def versions(run_dir: Path, steps: int) -> list[list[int]]:
    """Policy version recorded in each trajectory of each step."""
    return [sorted({t.policy_version for t in read_step(run_dir / "rollouts", s)}) for s in range(steps)]


def test_rollout_version_is_step_minus_staleness_never_negative():
    assert [rollout_version(s, 0) for s in range(4)] == [0, 1, 2, 3]
    assert [rollout_version(s, 1) for s in range(4)] == [0, 0, 1, 2]


def test_staleness_1_plays_each_step_with_the_previous_version(smoke):
    train(smoke(*PIPE, name="pipe"))
    train(smoke(*PIPE, "rollout.staleness=0", name="sync"))
    root = Path(smoke().run.root)
    assert versions(root / "pipe", 4) == [[0], [0], [1], [2]]
    assert versions(root / "sync", 4) == [[0], [1], [2], [3]]
    pipe, sync = tree_digest(root / "pipe", 4), tree_digest(root / "sync", 4)
    assert pipe["step_000000.jsonl.gz"] == sync["step_000000.jsonl.gz"]  # both play step 0 with version 0
    assert pipe["step_000002.jsonl.gz"] != sync["step_000002.jsonl.gz"]  # the lag is real
    assert pipe["model/model.safetensors"] != sync["model/model.safetensors"]


def test_staleness_1_ray_with_random_delays_equals_inline(smoke, ray_session, monkeypatch):
    """Workers sleep randomly inside every env step and the learner sleeps randomly before every update:
    1 and 2 Ray workers, pipelined, give exactly the inline run's weights, optimizer state and rollouts."""
    slow = ["env.id=relenvs:reliability/SlowCalc-v0", "env.kwargs.max_delay_s=0.01", "stages=[rl]", *PIPE]
    train(smoke(*slow, "rollout.executor=inline", name="inline"))
    jitter = random.Random(time.time_ns())
    update = Trainer.update

    def slow_update(self, *a, **kw):
        time.sleep(jitter.random() * 0.3)
        return update(self, *a, **kw)

    monkeypatch.setattr(Trainer, "update", slow_update)
    train(smoke(*slow, "rollout.executor=ray", "rollout.workers=1", name="ray1"))
    train(smoke(*slow, "rollout.executor=ray", "rollout.workers=2", name="ray2"))
    root = Path(smoke().run.root)
    want = tree_digest(root / "inline", 4)
    assert tree_digest(root / "ray1", 4) == want
    assert tree_digest(root / "ray2", 4) == want
    assert versions(root / "ray2", 4) == [[0], [0], [1], [2]]


def test_staleness_1_resume_at_a_boundary_and_after_a_torn_checkpoint(smoke):
    train(smoke(*PIPE, name="full"))
    train(smoke(*PIPE, "rl.steps=2", name="part"))
    run_dir, cfg = open_run_dir(Path(smoke().run.root) / "part")
    ck = run_dir / "checkpoints" / "step_000002"
    assert (ck / "state.json").read_text().count('"staleness": 1') == 1
    cfg.rl.steps = 4
    resume(run_dir, cfg)
    want = tree_digest(run_dir.parent / "full", 4)
    assert tree_digest(run_dir, 4) == want
    # tear step 3 (the in-flight weights of version 2 live in it): resume falls back to step 2's
    shutil.rmtree(run_dir / "checkpoints" / "step_000004")
    (run_dir / "checkpoints" / "step_000003" / "learner.safetensors").write_bytes(b"torn")
    (run_dir / "rollouts" / "step_000003.jsonl.gz").unlink()
    resume(run_dir, cfg)
    assert tree_digest(run_dir, 4) == want


def test_staleness_1_checkpoint_refused_under_staleness_0(smoke):
    from steprl.errors import SteprlError

    train(smoke("rollout.staleness=0", "rl.steps=2", "rl.checkpoint_every=1", name="sync"))
    run_dir, cfg = open_run_dir(Path(smoke().run.root) / "sync")
    cfg.rollout.staleness = 1
    cfg.rl.steps = 3
    with pytest.raises(SteprlError, match="holds no weights of policy version 1.*staleness=1"):
        resume(run_dir, cfg)


def test_replay_proves_a_pipelined_step(smoke, capsys):
    from steprl.cli import main

    train(smoke(*PIPE, name="pipe"))
    run = Path(smoke().run.root) / "pipe"
    capsys.readouterr()
    assert main(["replay", str(run), "--step", "3"]) == 0
    assert "8/8 trajectories identical (step 3, policy version 2)" in capsys.readouterr().out


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "steprl.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_sigint_mid_step_with_staleness_1_then_resume_is_bitwise_identical(tmp_path):
    import json

    slow = ["rollout.staleness=1", "rl.steps=6", "rl.checkpoint_every=100", "rollout.groups=4", "rollout.micro_batch=8",
            "run.threads=1"]
    r = _cli("train", "smoke", f"run.root={tmp_path}", "run.name=full", *slow, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    proc = subprocess.Popen(
        [sys.executable, "-m", "steprl.cli", "train", "smoke", f"run.root={tmp_path}", "run.name=cut", *slow],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cut, metrics = tmp_path / "cut", tmp_path / "cut" / "metrics.jsonl"

    def rl_rows() -> int:
        rows = metrics.read_text().splitlines() if metrics.is_file() else []
        return sum(json.loads(x).get("stage") == "rl" for x in rows)

    deadline = time.time() + 240
    while rl_rows() < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # lands while a step is being updated and the next one played
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-2000:]
    stopped = rl_rows()
    assert 2 <= stopped < 6
    state = json.loads((cut / "checkpoints" / f"step_{stopped:06d}" / "state.json").read_text())
    assert state["staleness"] == 1
    r = _cli("resume", str(cut), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert tree_digest(tmp_path / "full", 6) == tree_digest(cut, 6)
