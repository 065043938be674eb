"""End to end on Ray: warm-up + RL + eval on a tiny calculator task; the run directory is complete and RL helps."""

import json

import pytest
import ray

from steprl.pipeline import train
from steprl.rollout.store import read_step

# The quickstart recipe shrunk: 1-digit operands, a 2-layer model, and demonstrations in which the
# expert uses the calculator only 45% of the time, so the warm-up policy's greedy move is to guess
# and RL must discover that calling the tool pays.
TINY = ["model.layers=2", "model.hidden=64", "model.heads=2", "model.kv_heads=2", "model.intermediate=128",
        "env.kwargs.digits=1", "env.kwargs.instructions=false", "rollout.executor=ray", "rollout.groups=8",
        "rollout.group_size=8", "rollout.micro_batch=32", "learner.lr=1e-3", "learner.micro_batch=64",
        "warmup.steps=1200", "warmup.lr=3e-3", "warmup.warmup_steps=20", "warmup.imperfect_rate=0.55",
        "rl.steps=16", "rl.checkpoint_every=8", "eval.episodes=64", "eval.micro_batch=32"]


@pytest.fixture(scope="module", autouse=True)
def ray_session_closed_after():
    """The pipeline starts an embedded Ray; stop it so later test modules start from a clean process."""
    yield
    ray.shutdown()


def test_train_with_ray_writes_the_run_and_rl_raises_success(smoke):
    cfg = smoke(*TINY, name="e2e")
    summary = train(cfg)
    run = cfg.run.root + "/e2e"
    import pathlib

    run = pathlib.Path(run)
    for rel in ("config.yaml", "environment.json", "metrics.jsonl", "summary.json", "checkpoints/latest",
                "checkpoints/step_000000/MANIFEST.json", "checkpoints/step_000016/model/model.safetensors",
                "plots/reward.png", "plots/kl_entropy.png", "plots/grad_guards.png", "plots/throughput.png"):
        assert (run / rel).exists(), rel
    assert (run / "checkpoints/latest").read_text().strip() == "step_000016"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == list(range(16))
    for key in ("reward_mean", "success_rate", "loss", "kl", "entropy", "grad_norm", "clip_frac", "tokens_per_s",
                "step_time_s", "guard/nonfinite", "step_digest"):
        assert key in rl[0], key
    assert all(len(read_step(run / "rollouts", s)) == 64 for s in range(16))
    st = summary["stages"]
    assert st["warmup"]["eval_episodes"] == 64
    # RL measurably helps on the same held-out seeds, and in training reward
    assert st["rl"]["success"] >= st["warmup"]["success"] + 0.25  # measured: 0.078 -> 0.781
    first = sum(r["reward_mean"] for r in rl[:4]) / 4
    last = sum(r["reward_mean"] for r in rl[-4:]) / 4
    assert last > first
    assert json.loads((run / "summary.json").read_text())["final_checkpoint"].endswith("step_000016")
