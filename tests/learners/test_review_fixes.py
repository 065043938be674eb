"""Fixes from the numerics review, each pinned by a test that failed before the fix."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import tomllib
import torch

from steprl.learners.advantages import make_advantage
from steprl.learners.config import LearnerConfig
from steprl.learners.trainer import rl_trainer


def test_dual_clip_in_zero_one_is_rejected():
    for bad in (0.5, 1.0):
        assert any(k == "dual_clip" for k, _ in LearnerConfig(dual_clip=bad).check())
    for ok in (0.0, 1.5, 3.0):
        assert not any(k == "dual_clip" for k, _ in LearnerConfig(dual_clip=ok).check())


@pytest.mark.parametrize("name", ["grpo", "rloo", "drgrpo"])
def test_lone_group_member_gets_zero_advantage(name):
    est = make_advantage(name, LearnerConfig())
    res = est([1.0, 0.0, 1.0, 5.0], [0, 0, 0, 1])  # group 1 shrank to one valid member
    assert res.advantages[3].item() == 0.0
    assert 1 in res.zero_groups


def _lengths_batch(traj, pad):
    """Two sequences of 6 tokens (3 trained), plus an optional long batch-mate of 40 tokens."""
    out = [traj(0, [2, 3, 4, 5, 6, 7], [0, 0, 0, 1, 1, 1], reward=1.0, group=0, member=0),
           traj(1, [2, 3, 4, 6, 6, 6], [0, 0, 0, 1, 1, 1], reward=0.0, group=0, member=1)]
    if pad:
        out.append(traj(2, [2] * 40, [0] * 40, reward=0.5, group=1, member=0))
    return out


def test_drgrpo_normaliser_is_a_constant(new_model, traj):
    cfg = LearnerConfig(lr=1e-2, aggregation="seq-mean-token-sum-norm", advantage="drgrpo", grad_clip=0.0)
    grads = []
    for pad in (False, True):
        model = new_model(0)
        tr = rl_trainer(model, cfg, total_steps=1, max_episode_tokens=64)
        trajs = _lengths_batch(traj, pad)
        stats = tr.update(trajs)
        grads.append(stats["loss"] * (len(trajs)))  # loss = sum / (B x L): B x loss is batch-mate free
    assert math.isclose(grads[0], grads[1], rel_tol=1e-6)


def test_drgrpo_without_a_length_is_refused(new_model):
    with pytest.raises(ValueError, match="norm_len"):
        rl_trainer(new_model(0), LearnerConfig(aggregation="seq-mean-token-sum-norm"), total_steps=1)


def test_reinforce_baseline_ignores_skipped_steps(new_model, traj):
    cfg = LearnerConfig(lr=1e-3, advantage="reinforce", max_consecutive_skips=100)
    tr = rl_trainer(new_model(0), cfg, total_steps=3)
    good = [traj(i, [2, 3, 4, 5], [0, 0, 1, 1], reward=float(i % 2)) for i in range(4)]
    tr.update(good)
    before = tr.objective.estimator.state_dict()
    # a non-finite loss skips the step: a behaviour log-prob far out makes the TIS-weighted loss inf
    bad = [traj(i, [2, 3, 4, 5], [0, 0, 1, 1], reward=10.0) for i in range(4)]
    for p in tr.model.parameters():
        p.data[0].view(-1)[0] = float("nan")  # a NaN weight: every loss of this step is non-finite
    stats = tr.update(bad)
    assert stats["skipped"] == 1.0
    assert tr.objective.estimator.state_dict() == before


def test_dependency_floors_are_what_is_tested():
    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {d.split(">=")[0].strip(): d.split(">=")[1].split(",")[0].strip() for d in deps if ">=" in d}

    def ver(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("+")[0].split(".")[:2])

    import transformers

    assert ver(floors["torch"]) >= (2, 5)  # F.rms_norm (2.4), SDPA enable_gqa (2.5)
    assert ver(floors["transformers"]) >= (5, 0)  # the sampler's `cache=` keyword
    assert ver(torch.__version__) >= ver(floors["torch"])
    assert ver(transformers.__version__) >= ver(floors["transformers"])
