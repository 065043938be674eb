"""Advantage estimators (docs/numerics.md#advantages)."""

from __future__ import annotations

import math

import pytest
import torch

from steprl.learners.advantages import ADVANTAGES, make_advantage
from steprl.learners.config import LearnerConfig

CFG = LearnerConfig()


def test_registry_has_all_estimators_and_rejects_unknown():
    assert set(ADVANTAGES) >= {"grpo", "rloo", "drgrpo", "reinforce"}
    with pytest.raises(ValueError, match="unknown advantage"):
        make_advantage("nope", CFG)


def test_grpo_values_group_of_one_and_constant_group():
    est = make_advantage("grpo", CFG)
    res = est([1.0, 0.0, 0.0, 1.0, 0.7, 0.1, 0.1, 0.1], [0, 0, 0, 0, 1, 2, 2, 2])
    a = res.advantages
    std = math.sqrt(4 * 0.25 / 3)  # unbiased
    assert torch.allclose(a[:4], torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=torch.float64) / (std + 1e-6))
    assert a[4].item() == 0.0  # group of one: zero advantage (A = R would be an unnormalised push)
    assert a[5:].tolist() == [0.0, 0.0, 0.0]  # exactly zero, although mean([0.1]*3) != 0.1 in float64
    assert res.zero_groups == (1, 2) and res.zero_adv_groups == 2


def test_rloo_and_drgrpo_values():
    r, g = [1.0, 0.0, 0.0, 2.0, 5.0, 5.0], [0, 0, 0, 1, 2, 2]
    rl = make_advantage("rloo", CFG)(r, g)
    assert rl.advantages.tolist() == [1.0, -0.5, -0.5, 0.0, 0.0, 0.0]  # the lone member of group 1 gets 0
    assert rl.zero_adv_groups == 2
    dr = make_advantage("drgrpo", CFG)(r, g)
    assert torch.allclose(dr.advantages, torch.tensor([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0], dtype=torch.float64))
    assert dr.advantages[4:].tolist() == [0.0, 0.0]


def test_constant_nonrepresentable_group_is_exactly_zero_for_every_group_estimator():
    for name in ("grpo", "rloo", "drgrpo"):
        res = make_advantage(name, CFG)([0.7, 0.7, 0.7], [3, 3, 3])
        assert res.advantages.tolist() == [0.0, 0.0, 0.0], name
        assert res.zero_adv_groups == 1


def test_reinforce_running_baseline_and_state():
    cfg = LearnerConfig(advantage="reinforce", reinforce_decay=0.5)
    est = make_advantage("reinforce", cfg)
    a1 = est([1.0, 0.0, 1.0, 1.0], [0, 0, 1, 1]).advantages  # first batch: its own mean 0.75
    assert a1.tolist() == [0.25, -0.75, 0.25, 0.25]
    state = est.state_dict()
    assert state == {"baseline": 0.75, "count": 1}
    a2 = est([0.0, 0.0], [0, 0]).advantages
    assert a2.tolist() == [-0.75, -0.75]  # baseline from earlier batches, not this one
    assert est.state_dict()["baseline"] == 0.5 * 0.75 + 0.5 * 0.0
    fresh = make_advantage("reinforce", cfg)
    fresh.load_state_dict(state)
    assert fresh([0.0, 0.0], [0, 0]).advantages.tolist() == [-0.75, -0.75]


def test_config_accepts_exactly_the_registered_names():
    """One edit adds an estimator: LearnerConfig.check validates against the registries."""
    from steprl.learners.advantages import ADVANTAGES, GRPO, register_advantage
    from steprl.learners.config import LearnerConfig

    expected = ("advantage", "expected one of grpo, rloo, drgrpo, reinforce, got 'tmp_est'")
    assert expected in LearnerConfig(advantage="tmp_est").check()
    register_advantage("tmp_est")(type("TmpEst", (GRPO,), {}))
    try:
        assert LearnerConfig(advantage="tmp_est").check() == []
    finally:
        del ADVANTAGES["tmp_est"]
    problems = dict(LearnerConfig(loss="nope", aggregation="nah", schedule="wavy").check())
    assert problems == {"loss": "expected one of ppo, gspo, cispo, got 'nope'",
                        "aggregation": "expected one of token-mean, seq-mean-token-mean, seq-mean-token-sum-norm, "
                                       "got 'nah'",
                        "schedule": "expected one of constant, linear, cosine, got 'wavy'"}
