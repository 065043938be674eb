"""SIGTERM stops like the first Ctrl-C (issue 20 #9); step 0 is checkpointed whatever the stages (#6)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

SLOW = ["rl.steps=6", "rl.checkpoint_every=100", "rollout.groups=4", "rollout.micro_batch=8"]


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "steprl.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def rl_rows(run_dir: Path) -> list[dict]:
    p = run_dir / "metrics.jsonl"
    return [r for r in map(json.loads, p.read_text().splitlines()) if r.get("stage") == "rl"] if p.is_file() else []


def test_sigterm_finishes_the_step_checkpoints_and_stops(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "steprl.cli", "train", "smoke", f"run.root={tmp_path}",
                             "run.name=cut", *SLOW], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    cut, deadline = tmp_path / "cut", time.time() + 240
    while len(rl_rows(cut)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGTERM: finishing the current step" in err and "steprl resume" in err and "Traceback" not in err
    stopped = len(rl_rows(cut))
    assert 2 <= stopped < 6
    assert (cut / "checkpoints" / f"step_{stopped:06d}" / "MANIFEST.json").is_file()


def test_a_run_without_warmup_checkpoints_step_0_and_replays_it(tmp_path):
    r = cli("train", "smoke", f"run.root={tmp_path}", "run.name=nowarm", "stages=[rl]", "rl.steps=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "nowarm"
    assert (run / "checkpoints" / "step_000000" / "MANIFEST.json").is_file()
    r = cli("replay", str(run), "--step", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "8/8 trajectories identical" in r.stdout + r.stderr
