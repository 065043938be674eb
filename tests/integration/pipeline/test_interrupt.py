"""Ctrl-C in the middle of a step: the step finishes, a checkpoint is written, resume equals the uninterrupted run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from digests import tree_digest

SLOW = ["rl.steps=6", "rl.checkpoint_every=100", "rollout.groups=4", "rollout.micro_batch=8"]


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "steprl.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def rl_rows(run_dir: Path) -> list[dict]:
    p = run_dir / "metrics.jsonl"
    if not p.is_file():
        return []
    return [r for r in map(json.loads, p.read_text().splitlines()) if r.get("stage") == "rl"]


def test_sigint_mid_step_then_resume_is_bitwise_identical(tmp_path):
    r = cli("train", "smoke", f"run.root={tmp_path}", "run.name=full", *SLOW, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    proc = subprocess.Popen(
        [sys.executable, "-m", "steprl.cli", "train", "smoke", f"run.root={tmp_path}", "run.name=cut", *SLOW],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cut = tmp_path / "cut"
    deadline = time.time() + 240
    while len(rl_rows(cut)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # lands while step 2 or 3 is being played or updated
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-2000:]
    assert "steprl resume" in err and "Traceback" not in err
    stopped = len(rl_rows(cut))
    assert 2 <= stopped < 6
    assert (cut / "checkpoints" / f"step_{stopped:06d}" / "MANIFEST.json").is_file()
    r = cli("resume", str(cut), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert tree_digest(tmp_path / "full", 6) == tree_digest(cut, 6)
    assert len(rl_rows(cut)) == 6
