"""An env raising inside step(): the episode is truncated with its error, masked by the learner and counted.

NaN/Inf planted in a gradient, a reward and behaviour log-probs: the guard acts, counts, the run goes on.
A weight sync skipped on purpose: `logprob_gap` jumps on the very next step.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import relenvs  # noqa: F401  (registers reliability/*)
import torch
from relhelp import pool_parts, weights_of, with_env

from steprl.learners.policy_gradient import trajectory_is_valid
from steprl.learners.trainer import rl_trainer
from steprl.rollout.plan import plan_step
from steprl.rollout.seeding import derive
from steprl.rollout.workers import RolloutPool

OVERRIDES = ["rollout.executor=inline", "rollout.groups=2", "rollout.group_size=4", "rollout.micro_batch=8",
             "rollout.sampling.max_new_tokens=12", "learner.lr=0.01"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Config, policy and an inline pool holding version 0."""
    from steprl.config import load_config

    torch.set_num_threads(1)
    cfg = load_config("smoke", [f"run.root={tmp_path_factory.mktemp('e')}", *OVERRIDES])
    policy, spec = pool_parts(cfg)
    pool = RolloutPool(spec, cfg.rollout)
    pool.set_weights(0, weights_of(policy))
    return cfg, policy, pool


def planted_rewards(trajs, tag: str):
    """Trajectories with rewards derived from (tag, index), so groups have variance and the learner moves."""
    return [dataclasses.replace(t, reward=float(derive(7, tag, t.spec.index) % 3) / 2) for t in trajs]


def learner_for(cfg, model):
    """A learner on `model` with the run's settings."""
    return rl_trainer(model, cfg.learner, temperature=cfg.rollout.sampling.temperature, total_steps=10, pad_id=0)


def state_bytes(learner) -> list[bytes]:
    """Every parameter and optimizer tensor as bytes (bitwise comparisons)."""
    out = [p.detach().numpy().tobytes() for p in learner.model.parameters()]
    for st in learner.optimizer.state.values():
        out += [v.numpy().tobytes() for v in st.values() if torch.is_tensor(v)]
    return out


def test_env_raising_in_step_is_truncated_masked_and_counted(world):
    cfg, policy, pool = world
    specs = with_env(plan_step(cfg, 0), "reliability/StepRaisesCalc-v0")
    trajs = pool.play(specs)
    failed = [t for t in trajs if t.error]
    expected = [t.spec.index for t in trajs if t.spec.env_seed % 7 == 2]
    assert [t.spec.index for t in failed] == expected and failed  # only the broken episodes failed
    for t in failed:
        assert "step raised RuntimeError: injected env failure" in t.error
        assert t.truncated and not t.finished and not t.success
        assert not trajectory_is_valid(t)
    assert all(trajectory_is_valid(t) for t in trajs if not t.error)
    # gradient from the failed episodes: none. Same update with their content scrambled is bitwise equal.
    trajs = planted_rewards(trajs, "env-raises")
    scrambled = [dataclasses.replace(t, reward=1e6, behavior_logprobs=tuple(-5.0 for _ in t.behavior_logprobs))
                 if t.error else t for t in trajs]
    a, b = learner_for(cfg, copy.deepcopy(policy.model)), learner_for(cfg, copy.deepcopy(policy.model))
    before = state_bytes(a)
    sa, sb = a.update(trajs), b.update(scrambled)
    assert state_bytes(a) == state_bytes(b)
    assert state_bytes(a) != before  # the valid episodes did train
    assert sa["guard/bad_trajectories"] == len(failed) == sb["guard/bad_trajectories"]
    print(f"\nFIGURE env-raises: {len(failed)}/{len(trajs)} episodes failed, masked and counted; "
          f"gradient from failed episodes: 0 (bitwise-equal update)")


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_nonfinite_gradient_skips_the_step_then_training_continues(world, bad):
    cfg, policy, pool = world
    trajs = planted_rewards(pool.play(plan_step(cfg, 0)), "grad")
    learner = learner_for(cfg, copy.deepcopy(policy.model))
    before = state_bytes(learner)
    p = next(learner.model.parameters())
    hook = p.register_hook(lambda g: torch.full_like(g, bad))
    s = learner.update(trajs)
    hook.remove()
    assert s["skipped"] == 1.0 and s["guard/nonfinite"] == 1.0
    assert state_bytes(learner) == before  # parameters and optimizer state untouched
    s2 = learner.update(trajs)
    assert s2["skipped"] == 0.0 and s2["guard/nonfinite"] == 1.0 and state_bytes(learner) != before
    assert all(torch.isfinite(q).all() for q in learner.model.parameters())


@pytest.mark.parametrize("where", ["reward", "behaviour_logprob"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nonfinite_reward_or_logprob_is_masked_and_counted(world, where, bad):
    cfg, policy, pool = world
    trajs = planted_rewards(pool.play(plan_step(cfg, 0)), "nf")
    victim = trajs[3]
    if where == "reward":
        trajs[3] = dataclasses.replace(victim, reward=bad)
    else:
        pos = victim.action_mask.index(1)
        lps = list(victim.behavior_logprobs)
        lps[pos] = bad
        trajs[3] = dataclasses.replace(victim, behavior_logprobs=tuple(lps))
    learner = learner_for(cfg, copy.deepcopy(policy.model))
    before = state_bytes(learner)
    s = learner.update(trajs)
    assert s["guard/bad_trajectories"] == 1.0 and s["skipped"] == 0.0  # masked, the step still trains
    assert state_bytes(learner) != before
    assert all(math.isfinite(v) for k, v in s.items())
    assert all(torch.isfinite(q).all() for q in learner.model.parameters())
    s2 = learner.update(planted_rewards(pool.play(plan_step(cfg, 0)), "nf"))  # the run continues
    assert s2["guard/bad_trajectories"] == 1.0 and s2["skipped"] == 0.0


def test_skipped_weight_sync_makes_logprob_gap_jump_within_one_step(world):
    cfg, policy, _ = world
    gaps = {}
    for mode in ("synced", "skipped"):
        pool = RolloutPool(pool_parts(cfg)[1], cfg.rollout)
        learner = learner_for(cfg, copy.deepcopy(policy.model))
        pool.set_weights(0, learner.weights())
        s0 = learner.update(planted_rewards(pool.play(plan_step(cfg, 0)), "sync0"))
        if mode == "synced":
            pool.set_weights(1, learner.weights())
        s1 = learner.update(planted_rewards(pool.play(plan_step(cfg, 1)), "sync1"))
        gaps[mode] = (s0["logprob_gap"], s1["logprob_gap"])
    on_policy = max(gaps["synced"][0], gaps["synced"][1], gaps["skipped"][0])
    stale = gaps["skipped"][1]
    print(f"\nFIGURE stale-weights: logprob_gap on-policy <= {on_policy:.2e}, after a skipped sync {stale:.2e} "
          f"({stale / max(on_policy, 1e-12):.0f}x), detected at the first step")
    assert on_policy < 1e-4
    assert stale > 100 * max(on_policy, 1e-6)
