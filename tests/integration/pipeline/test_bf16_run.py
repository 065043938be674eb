"""learner.dtype / rollout.dtype = bfloat16 (issue 16, 18): a real run on the CPU is finite, replays exactly, and
is not float32 under another name."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BF16 = ["learner.dtype=bfloat16", "rollout.dtype=bfloat16"]
SHORT = ["stages=[rl]", "rl.steps=3", "rl.checkpoint_every=2", "learner.entropy_coef=0.01"]
"""From the random init every reward is 0 (zero advantages): the entropy bonus gives every step a gradient."""


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "steprl.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def rl_rows(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("stage") == "rl"]


def weights_sha(run: Path, step: int) -> str:
    return hashlib.sha256((run / "checkpoints" / f"step_{step:06d}" / "model" / "model.safetensors").read_bytes()
                          ).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    for name, extra in (("bf16", BF16), ("fp32", [])):
        r = cli("train", "smoke", f"run.root={root}", f"run.name={name}", *SHORT, *extra, cwd=root)
        assert r.returncode == 0, r.stderr[-3000:]
    return root


def test_bf16_run_is_finite_records_its_recipe_and_learns_close_to_the_sampler(runs):
    rows = rl_rows(runs / "bf16")
    assert len(rows) == 3
    assert all(abs(r["loss"]) < float("inf") and r["skipped"] == 0 for r in rows)
    assert rows[0]["logprob_gap"] < 1e-3  # learner (autocast body, fp32 head) vs sampler (bf16 fused matmuls)
    saved = (runs / "bf16" / "config.yaml").read_text()
    assert "dtype: bfloat16" in saved and "device: cpu" in saved  # auto resolved at start and recorded
    topo = json.loads((runs / "bf16" / "topology.json").read_text())
    assert {d.get("dtype") for d in topo["devices"] if d["name"] != "driver"} == {"bfloat16"}


def test_bf16_weights_differ_from_float32(runs):
    assert weights_sha(runs / "bf16", 0) == weights_sha(runs / "fp32", 0)  # same init
    assert weights_sha(runs / "bf16", 3) != weights_sha(runs / "fp32", 3)  # the setting is not a no-op


def test_bf16_replay_is_identical_tokens_and_weights(runs):
    r = cli("replay", str(runs / "bf16"), "--step", "2", cwd=runs)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "8/8 trajectories identical" in r.stdout + r.stderr
