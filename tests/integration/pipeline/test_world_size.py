"""World-size invariance: 5 RL steps of the smoke preset give bitwise-identical weights, optimizer state and
rollouts at learner.world_size 1, 2 and 4 (one fixed gradient tree, the same threads per rank)."""

from __future__ import annotations

import hashlib

import pytest

from steprl.pipeline import train

pytestmark = pytest.mark.slow
RUN = ["stages=[warmup,rl]", "rl.steps=5", "rl.checkpoint_every=5", "learner.micro_batch=2", "rollout.groups=4",
       "learner.threads_per_rank=1", "learner.cpus_per_rank=0.5", "warmup.cache=true", "learner.lr=3e-3",
       "learner.entropy_coef=0.05"]  # smoke rewards are all 0 after 20 warm-up steps: entropy moves the weights


def _files(run_dir, step: int) -> dict[str, str]:
    ck = run_dir / "checkpoints" / f"step_{step:06d}"
    names = ["model/model.safetensors", "learner.safetensors", "learner.json"]
    out = {n: hashlib.sha256((ck / n).read_bytes()).hexdigest() for n in names}
    for p in sorted((run_dir / "rollouts").glob("*.jsonl.gz")):
        out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_weights_bitwise_equal_at_world_sizes_1_2_4(smoke, tmp_path) -> None:
    got = {}
    for ws in (1, 2, 4):
        train(smoke(*RUN, f"learner.world_size={ws}", name=f"ws{ws}"))
        got[ws] = _files(tmp_path / f"ws{ws}", 5)
    start = hashlib.sha256((tmp_path / "ws1/checkpoints/step_000000/model/model.safetensors").read_bytes()).hexdigest()
    assert got[1]["model/model.safetensors"] != start, "the learner never moved: the test would prove nothing"
    assert got[2] == got[1]
    assert got[4] == got[1]
