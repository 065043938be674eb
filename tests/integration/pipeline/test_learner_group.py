"""The data-parallel learner group: guards decided on reduced values by every rank together, the per-rank
thread setting, and a killed rank survived by resume at another world size."""

from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import replace

import pytest
import torch

from steprl.agents.policy import build_policy
from steprl.pipeline import resume, train
from steprl.rollout.trajectory import EpisodeSpec, Trajectory
from steprl.run.files.run_dir import open_run_dir
from steprl.run.learning.learner import make_learner
from steprl.run.learning.learner_group import LearnerGroup, LearnerRankError

pytestmark = pytest.mark.slow
LEARN = ["learner.micro_batch=2", "learner.threads_per_rank=1", "learner.cpus_per_rank=0.5", "learner.lr=3e-3",
         "learner.entropy_coef=0.05"]


def _trajs(step: int, vocab: int) -> list[Trajectory]:
    """8 episodes in 2 groups with different rewards (non-zero advantages), tokens from a local generator."""
    g = torch.Generator().manual_seed(step)
    out = []
    for i in range(8):
        n = 6 + i % 3
        toks = torch.randint(3, vocab, (n,), generator=g).tolist()
        spec = EpisodeSpec(step=step, index=i, group=i // 4, member=i % 4, env_id="toy", env_seed=0, sample_key=i)
        out.append(Trajectory.build(spec=spec, policy_version=step, tokens=toks, action_mask=[0, 0] + [1] * (n - 2),
                                    behavior_logprobs=[-2.0] * n, reward=float(i % 2), turn_rewards=(), num_turns=1,
                                    finished=True, truncated=False, tool_calls=0, tool_errors=0,
                                    success=bool(i % 2), error=""))
    return out


def _train_two_steps(cfg) -> tuple[list[dict], dict[str, torch.Tensor], object]:
    policy = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
    learner = make_learner(cfg, policy, _nowhere())
    try:
        learner.plant_nan(0, 3)  # micro-batch 3 of 4: rank 1's at world size 2
        vocab = policy.model.get_input_embeddings().num_embeddings
        metrics = [learner.update(_trajs(s, vocab)) for s in range(2)]
        threads = learner.call("threads") if isinstance(learner, LearnerGroup) else [torch.get_num_threads()]
        return metrics, learner.weights(), threads
    finally:
        learner.close()


def _nowhere():
    from pathlib import Path

    return Path("/nonexistent-steprl-ckpts")


def test_nan_in_one_rank_makes_every_rank_skip(smoke) -> None:
    m1, w1, _ = _train_two_steps(smoke(*LEARN))
    m2, w2, threads = _train_two_steps(smoke(*LEARN, "learner.world_size=2"))
    assert m1[0]["skipped"] == 1.0 and m1[0]["guard/nonfinite"] == 1.0
    assert m1[1]["skipped"] == 0.0
    assert repr(m2) == repr(m1)  # the group also checked that both ranks reported the same metrics
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert threads == [1, 1]  # learner.threads_per_rank on every rank


def _digest(run_dir, step: int) -> dict[str, str]:
    ck = run_dir / "checkpoints" / f"step_{step:06d}"
    out = {n: hashlib.sha256((ck / n).read_bytes()).hexdigest() for n in ("model/model.safetensors",
                                                                           "learner.safetensors")}
    for p in sorted((run_dir / "rollouts").glob("*.jsonl.gz")):
        out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_killed_rank_fails_the_step_and_resume_continues_at_another_world_size(smoke, tmp_path, monkeypatch) -> None:
    run = ["stages=[warmup,rl]", "rl.steps=4", "rl.checkpoint_every=2", "rollout.groups=4", "warmup.cache=true", *LEARN]
    train(smoke(*run, name="calm"))
    real, calls = LearnerGroup.update, []

    def killing(self, trajs):
        calls.append(1)
        if len(calls) == 3:  # step 2, after checkpoint step_000002
            os.kill(self.call("pid")[1], signal.SIGKILL)
        return real(self, trajs)

    monkeypatch.setattr(LearnerGroup, "update", killing)
    with pytest.raises(LearnerRankError, match="learner rank 1 of 2 died"):
        train(smoke(*run, "learner.world_size=2", name="killed"))
    monkeypatch.setattr(LearnerGroup, "update", real)
    run_dir, cfg = open_run_dir(tmp_path / "killed")
    assert cfg.learner.world_size == 2  # the recipe keeps the world size; resume here overrides it
    resume(run_dir, replace(cfg, learner=replace(cfg.learner, world_size=1)))
    assert _digest(run_dir, 4) == _digest(tmp_path / "calm", 4)
