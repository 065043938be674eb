"""The policy-gradient trainer (rl_trainer): guards in context, determinism, resume, invariances, a toy problem."""

from __future__ import annotations

import copy
import io
import math
from dataclasses import replace

import pytest
import torch

from steprl.learners.config import LearnerConfig
from steprl.learners.guards import TrainingDivergedError
from steprl.learners.trainer import rl_trainer

METRICS = {"loss", "reward_mean", "reward_std", "success_rate", "kl", "entropy", "clip_frac", "ratio_mean", "ratio_max",
           "tis_clip_frac", "logprob_gap", "filter_disagreements", "grad_norm", "lr", "tokens_trained",
           "zero_adv_groups", "skipped",
           "guard/nonfinite", "guard/spike_loss", "guard/spike_grad", "guard/grad_clipped", "guard/rollbacks",
           "guard/bad_trajectories", "guard/filtered_trajectories", "guard/consecutive_skips", "guard/lr_scale"}


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _opt_state(learner):
    return copy.deepcopy(learner.optimizer.state_dict()["state"])


def _same_opt(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[i][k], b[i][k]) for i in a for k in a[i])


def test_metrics_and_on_policy_ratios(new_model, toy_batch):
    model = new_model(0)
    learner = rl_trainer(model, LearnerConfig(lr=1e-2), total_steps=10)
    trajs = toy_batch(model, 2, 4, step=0)
    d = learner.update(trajs)
    assert set(d) == METRICS and all(isinstance(v, float) for v in d.values())
    assert d["tokens_trained"] == 16.0 and d["skipped"] == 0.0 and d["lr"] == 1e-2
    assert d["logprob_gap"] < 1e-5 and abs(d["ratio_mean"] - 1) < 1e-5 and d["clip_frac"] == 0.0
    assert d["reward_mean"] == sum(t.reward for t in trajs) / 8 and d["success_rate"] == d["reward_mean"]
    assert d["entropy"] > 0 and d["grad_norm"] > 0 and math.isfinite(d["loss"])


def test_planted_nan_gradient_leaves_params_and_optimizer_bitwise_unchanged(new_model, toy_batch):
    model = new_model(0)
    learner = rl_trainer(model, LearnerConfig(lr=1e-2))
    trajs = toy_batch(model, 2, 4, step=0)
    learner.update(trajs)
    before, opt_before = _params(model), _opt_state(learner)
    h = model.model.layers[0].mlp.down_proj.weight.register_hook(lambda g: g * float("nan"))
    stats = learner.update(trajs)
    h.remove()
    assert stats["skipped"] == 1.0 and stats["guard/nonfinite"] == 1.0 and not math.isfinite(stats["grad_norm"])
    assert _same(before, _params(model)) and _same_opt(opt_before, _opt_state(learner))
    assert learner.update(trajs)["skipped"] == 0.0 and not _same(before, _params(model))


def test_bad_trajectories_are_masked_and_counted(new_model, toy_batch):
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    ref = rl_trainer(copy.deepcopy(model), LearnerConfig(lr=1e-2))
    ref.update(trajs)
    nan_lp = list(trajs[0].behavior_logprobs)
    nan_lp[2] = float("nan")
    bad = [replace(trajs[0], spec=replace(trajs[0].spec, index=100, group=50), behavior_logprobs=tuple(nan_lp)),
           replace(trajs[1], spec=replace(trajs[1].spec, index=101, group=51), reward=float("nan")),
           replace(trajs[2], spec=replace(trajs[2].spec, index=102, group=52), error="env crashed")]
    learner = rl_trainer(model, LearnerConfig(lr=1e-2))
    d = learner.update(trajs + bad)
    assert d["guard/bad_trajectories"] == 3.0 and d["tokens_trained"] == 16.0 and math.isfinite(d["loss"])
    for k, v in _params(model).items():
        assert torch.allclose(v, ref.model.state_dict()[k], atol=1e-6), k


def test_batch_without_trainable_tokens_does_not_step(new_model, toy_batch):
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    learner = rl_trainer(model, LearnerConfig(lr=1e-2))
    learner.update(trajs)
    before = _params(model)
    d = learner.update([replace(t, error="tool timeout") for t in trajs])
    assert d["skipped"] == 1.0 and d["tokens_trained"] == 0.0 and d["guard/bad_trajectories"] == 8.0
    assert _same(before, _params(model)) and d["guard/consecutive_skips"] == 0.0


def test_observation_behaviour_logprobs_do_not_matter(new_model, toy_batch):
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    changed = []
    for t in trajs:
        lp = list(t.behavior_logprobs)
        lp[0], lp[3] = -7.0, float("nan")  # prompt and observation tokens (mask 0)
        changed.append(replace(t, behavior_logprobs=tuple(lp)))
    results = []
    for batch in (trajs, changed):
        learner = rl_trainer(copy.deepcopy(model), LearnerConfig(lr=1e-2, grad_clip=0.0))
        stats = learner.update(batch)
        grads = {n: p.grad.clone() for n, p in learner.model.named_parameters()}
        results.append((stats, grads, _params(learner.model)))
    assert results[0][0] == results[1][0]
    assert _same(results[0][1], results[1][1]) and _same(results[0][2], results[1][2])
    assert results[0][0]["guard/bad_trajectories"] == 0.0


def test_b2_stale_behaviour_logprobs_far_off_stay_finite(new_model, toy_batch):
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    off = [
        replace(
            t, behavior_logprobs=tuple(lp - 100.0 if m else lp for lp, m in zip(t.behavior_logprobs, t.action_mask))
        )
        for t in trajs
    ]
    d = rl_trainer(model, LearnerConfig(lr=1e-2)).update(off)
    assert d["skipped"] == 0.0 and math.isfinite(d["loss"]) and math.isfinite(d["grad_norm"])
    assert d["tis_clip_frac"] == 1.0 and d["logprob_gap"] == pytest.approx(100.0, abs=1e-3)
    assert d["ratio_max"] == pytest.approx(math.exp(20.0), rel=1e-5)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_gradient_independent_of_micro_batch_size(new_model, toy_batch, traj, aggregation):
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    # unequal lengths so padding and trimming differ between micro-batch sizes
    trajs[3] = traj(3, list(trajs[3].tokens) + [5, 6], list(trajs[3].action_mask) + [1, 1],
                    list(trajs[3].behavior_logprobs) + [-2.0, -2.5], trajs[3].reward, group=0, member=3)
    grads = []
    for size in (1, 2, 4, 8):
        cfg = LearnerConfig(lr=1e-2, micro_batch=size, grad_clip=0.0, aggregation=aggregation, kl_coef=0.1,
                            entropy_coef=0.01)
        learner = rl_trainer(copy.deepcopy(model), cfg, max_episode_tokens=16)
        learner.update(trajs)
        grads.append(torch.cat([p.grad.flatten() for p in learner.model.parameters()]))
    assert grads[0].abs().sum() > 0
    for g in grads[1:]:
        assert torch.allclose(g, grads[0], rtol=1e-5, atol=1e-6)


def test_two_updates_from_same_state_are_bitwise_identical_and_global_rng_untouched(new_model, toy_batch):
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    rng = torch.get_rng_state()
    outs = []
    for _ in range(2):
        learner = rl_trainer(copy.deepcopy(model), LearnerConfig(lr=1e-2, epochs=2, micro_batch=3))
        s = [learner.update(trajs), learner.update(trajs)]
        outs.append((s, _params(learner.model), _opt_state(learner)))
    assert outs[0][0] == outs[1][0] and _same(outs[0][1], outs[1][1]) and _same_opt(outs[0][2], outs[1][2])
    assert torch.equal(rng, torch.get_rng_state())


def test_resume_from_state_dict_is_bitwise(new_model, toy_batch):
    cfg = LearnerConfig(lr=1e-2, advantage="reinforce", kl_coef=0.05, warmup_steps=2, schedule="cosine",
                        spike_min_history=2)
    model = new_model(0)
    batches = [toy_batch(model, 2, 4, step=s) for s in range(4)]
    a = rl_trainer(copy.deepcopy(model), cfg, total_steps=6)
    a.update(batches[0])
    a.update(batches[1])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    tail_a = [a.update(b) for b in batches[2:]]
    b = rl_trainer(new_model(7), cfg, total_steps=6)  # different weights, overwritten by the state
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    tail_b = [b.update(x) for x in batches[2:]]
    assert tail_a == tail_b
    assert _same(_params(a.model), _params(b.model)) and _same_opt(_opt_state(a), _opt_state(b))
    assert _same(_params(a.objective.ref_model), _params(b.objective.ref_model))
    assert a.state_dict()["spike_loss"] == b.state_dict()["spike_loss"] and len(a.guard.spike_loss.values) == 4


def test_token_advantages_override_the_estimator(new_model, toy_batch):
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    a = rl_trainer(copy.deepcopy(model), LearnerConfig(lr=1e-2))
    a.update(trajs)
    adv = a.objective.estimator([t.reward for t in trajs], [t.spec.group for t in trajs]).advantages
    b = rl_trainer(copy.deepcopy(model), LearnerConfig(lr=1e-2))
    b.update(trajs, token_advantages=[torch.full((len(t.tokens),), float(x)) for t, x in zip(trajs, adv)])
    assert _same(_params(a.model), _params(b.model))
    c = rl_trainer(copy.deepcopy(model), LearnerConfig(lr=1e-2, grad_clip=0.0))
    c.update(trajs, token_advantages=[torch.zeros(len(t.tokens)) for t in trajs])
    assert all(p.grad.abs().sum() == 0 for p in c.model.parameters())


def test_zero_variance_groups_counted_and_filtered(new_model, traj):
    model = new_model(0)
    trajs = [traj(i, [3, 4, 5], [0, 1, 1], [0.0, -2.0, -2.0], reward=1.0, group=0, member=i) for i in range(3)]
    trajs += [
        traj(3 + i, [3, 4, 6], [0, 1, 1], [0.0, -2.0, -2.0], reward=float(i), group=1, member=i) for i in range(2)
    ]
    d = rl_trainer(copy.deepcopy(model), LearnerConfig(lr=1e-2)).update(trajs)
    assert d["zero_adv_groups"] == 1.0 and d["tokens_trained"] == 10.0 and math.isfinite(d["loss"])
    d = rl_trainer(copy.deepcopy(model), LearnerConfig(lr=1e-2, filter_zero_groups=True)).update(trajs)
    assert d["tokens_trained"] == 4.0 and d["guard/filtered_trajectories"] == 3.0


def test_spike_in_update_is_skipped(new_model, toy_batch):
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    learner = rl_trainer(model, LearnerConfig(lr=1e-4, spike_min_history=3, grad_clip=0.0))
    ones = [torch.ones(len(t.tokens)) for t in trajs]
    for _ in range(4):
        assert learner.update(trajs, token_advantages=ones)["skipped"] == 0.0
    before = _params(model)
    d = learner.update(trajs, token_advantages=[x * 1e4 for x in ones])
    assert d["skipped"] == 1.0 and d["guard/spike_grad"] == 1.0 and _same(before, _params(model))
    assert learner.update(trajs, token_advantages=ones)["skipped"] == 0.0


def test_repeated_skips_roll_back_then_raise(new_model, toy_batch):
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    cfg = LearnerConfig(lr=1e-2, max_consecutive_skips=2, max_rollbacks=1, rollback_lr_factor=0.5, rollback_steps=1)
    learner = rl_trainer(model, cfg)
    good = _params(model)  # rollback_steps=1: the rollback undoes the one applied step
    learner.update(trajs)
    assert not _same(good, _params(model))
    h = model.lm_head.weight.register_hook(lambda g: g * float("inf"))
    d1 = learner.update(trajs)
    d2 = learner.update(trajs)
    assert (d1["guard/rollbacks"], d2["guard/rollbacks"], d2["guard/lr_scale"]) == (0.0, 1.0, 0.5)
    assert _same(good, _params(model))
    assert learner.current_lr() == pytest.approx(0.5e-2)
    learner.update(trajs)
    with pytest.raises(TrainingDivergedError, match="diverged"):
        learner.update(trajs)
    h.remove()


def test_lr_warmup_and_cosine_schedule(new_model, toy_batch):
    model = new_model(0)
    trajs = toy_batch(model, 1, 2, step=0)
    learner = rl_trainer(model, LearnerConfig(lr=1.0, warmup_steps=2, schedule="cosine"), total_steps=6)
    lrs = [learner.update(trajs)["lr"] for _ in range(7)]
    expect = [0.5, 1.0, 1.0] + [0.5 * (1 + math.cos(math.pi * p / 4)) for p in (1, 2, 3, 4)]
    assert lrs == pytest.approx(expect)


def test_weights_are_detached_copies(new_model):
    model = new_model(0)
    w = rl_trainer(model, LearnerConfig()).weights()
    w["lm_head.weight"].zero_()
    assert model.lm_head.weight.abs().sum() > 0 and not w["lm_head.weight"].requires_grad


def test_config_is_checked(new_model):
    with pytest.raises(ValueError, match="micro_batch"):
        rl_trainer(new_model(0), LearnerConfig(micro_batch=0))


def _p_rewarded(model):
    """Exact probability that the first action is rewarded (token < 8)."""
    with torch.no_grad():
        return float(torch.softmax(model(input_ids=torch.tensor([[3, 4]])).logits[0, -1], -1)[:8].sum())


@pytest.mark.parametrize("cfg", [
    LearnerConfig(lr=1e-3),
    LearnerConfig(lr=1e-3, loss="cispo", advantage="rloo", kl_coef=0.1, entropy_coef=0.01),
    LearnerConfig(lr=1e-3, loss="gspo"),
    LearnerConfig(lr=1e-3, advantage="drgrpo", aggregation="seq-mean-token-sum-norm", micro_batch=5, norm_len=4),
], ids=["ppo-grpo", "cispo-rloo-kl-ent", "gspo", "ppo-drgrpo-sumnorm"])
def test_toy_problem_reward_rises(new_model, toy_batch, cfg):
    model = new_model(5)
    p0 = _p_rewarded(model)
    assert 0.45 <= p0 <= 0.6
    learner = rl_trainer(model, cfg, total_steps=30)
    rewards = [learner.update(toy_batch(model, 4, 4, step=step, seed=1))["reward_mean"] for step in range(30)]
    assert sum(rewards[:2]) / 2 < 0.8
    assert sum(rewards[-5:]) / 5 > 0.9 and _p_rewarded(model) > 0.9
    assert learner.counters["nonfinite"] == 0 and learner.counters["rollbacks"] == 0
    assert learner.counters["spike_loss"] == 0 and learner.counters["spike_grad"] == 0
