"""A rollback goes back `learner.rollback_steps` (N) applied steps or more, never to the current state.

The guard keeps the states at its start and after every N-th applied step since, the newest two; a rollback
restores the older one: the state before the last n applied steps, N <= n <= 2N - 1 (n < N: back to the
start, when fewer than N steps were applied since it). Every weight compared here comes from the same code
path (the same updates on the same batch), so the comparisons are bitwise.
"""

from __future__ import annotations

import copy

import pytest
import torch

from steprl.learners.config import LearnerConfig
from steprl.learners.trainer import rl_trainer
from steprl.run.files.state_io import flatten_state, unflatten_state


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _opt_state(learner):
    return copy.deepcopy(learner.optimizer.state_dict()["state"])


def _same_opt(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[i][k], b[i][k]) for i in a for k in a[i])


def _cfg(n: int) -> LearnerConfig:
    return LearnerConfig(lr=1e-2, rollback_steps=n, max_consecutive_skips=2, max_rollbacks=3, rollback_lr_factor=0.5)


def _poison(model):
    """Every later backward gives an infinite gradient norm: the non-finite guard skips the step."""
    return model.lm_head.weight.register_hook(lambda g: g * float("inf"))


def _good_steps(learner, model, trajs, k):
    """k applied updates; returns [(weights, AdamW state)] before the first and after each."""
    states = [(_params(model), _opt_state(learner))]
    for _ in range(k):
        assert learner.update(trajs)["skipped"] == 0.0
        states.append((_params(model), _opt_state(learner)))
    return states


@pytest.mark.parametrize(("n", "k", "back"), [(2, 4, 2), (2, 5, 3), (2, 1, 1), (1, 3, 1), (3, 6, 3), (3, 8, 5)])
def test_rollback_restores_the_state_before_the_last_n_applied_steps(new_model, toy_batch, n, k, back):
    """k good steps, then skips until a rollback: weights and AdamW state are those `back` applied steps ago,
    back = N + (k mod N) for k >= N (so exactly N when k is a multiple of N), k (the start) for k < N."""
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    learner = rl_trainer(model, _cfg(n), total_steps=20)
    states = _good_steps(learner, model, trajs, k)
    assert not _same(states[k][0], states[k - back][0])  # the steps moved the weights: the test can tell them apart
    h = _poison(model)
    d1, d2 = learner.update(trajs), learner.update(trajs)
    h.remove()
    assert (d1["skipped"], d2["skipped"], d1["guard/rollbacks"], d2["guard/rollbacks"]) == (1.0, 1.0, 0.0, 1.0)
    assert d2["guard/lr_scale"] == 0.5
    assert _same(_params(model), states[k - back][0])
    assert _same_opt(_opt_state(learner), states[k - back][1])


def test_skipped_steps_do_not_count_as_applied(new_model, toy_batch):
    """A skip between good steps neither refreshes a snapshot nor moves the count: 2 good, 1 skip, 2 good
    with N = 2 is 4 applied steps, so the rollback lands on the state after the second good step."""
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    learner = rl_trainer(model, _cfg(2), total_steps=20)
    after_two = _good_steps(learner, model, trajs, 2)[-1]
    h = _poison(model)
    assert learner.update(trajs)["skipped"] == 1.0
    h.remove()
    _good_steps(learner, model, trajs, 2)
    h = _poison(model)
    learner.update(trajs)
    assert learner.update(trajs)["guard/rollbacks"] == 1.0
    h.remove()
    assert _same(_params(model), after_two[0]) and _same_opt(_opt_state(learner), after_two[1])


def test_a_second_rollback_never_goes_past_the_first_landing_point(new_model, toy_batch):
    """After a rollback the landing state is the new start: one more good step, then skips, restores it."""
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    learner = rl_trainer(model, _cfg(2), total_steps=20)
    states = _good_steps(learner, model, trajs, 4)
    h = _poison(model)
    learner.update(trajs)
    learner.update(trajs)
    h.remove()
    assert _same(_params(model), states[2][0])
    _good_steps(learner, model, trajs, 1)
    h = _poison(model)
    learner.update(trajs)
    d = learner.update(trajs)
    h.remove()
    assert d["guard/rollbacks"] == 2.0 and d["guard/lr_scale"] == 0.25
    assert _same(_params(model), states[2][0]) and _same_opt(_opt_state(learner), states[2][1])


def _checkpoint_round_trip(state):
    """What a checkpoint stores and gives back (safetensors + JSON skeleton, no pickle)."""
    tensors, skeleton = flatten_state(state)
    return unflatten_state({k: v.clone() for k, v in tensors.items()}, copy.deepcopy(skeleton))


def test_rollback_after_resume_equals_rollback_without(new_model, toy_batch):
    """Checkpoint after 3 good steps (N = 2: one step past a refresh), resume into a fresh trainer, 2 more
    good steps and a rollback: bitwise what the uninterrupted trainer does, and 3 applied steps back."""
    trajs = toy_batch(new_model(0), 2, 4, step=0)
    runs = []
    for resumed in (False, True):
        model = new_model(0)
        learner = rl_trainer(model, _cfg(2), total_steps=20)
        states = _good_steps(learner, model, trajs, 3)
        if resumed:
            saved = _checkpoint_round_trip(learner.state_dict())
            model = new_model(1)  # other weights: everything must come from the checkpoint
            learner = rl_trainer(model, _cfg(2), total_steps=20)
            learner.load_state_dict(saved)
        states += _good_steps(learner, model, trajs, 2)[1:]
        h = _poison(model)
        learner.update(trajs)
        d = learner.update(trajs)
        h.remove()
        assert d["guard/rollbacks"] == 1.0
        assert _same(_params(model), states[5 - 3][0]) and _same_opt(_opt_state(learner), states[5 - 3][1])
        runs.append((_params(model), _opt_state(learner), learner.state_dict()["rollback"]["since"]))
    assert _same(runs[0][0], runs[1][0]) and _same_opt(runs[0][1], runs[1][1]) and runs[0][2] == runs[1][2]


def test_rollback_steps_is_checked():
    assert dict(LearnerConfig(rollback_steps=0).check())["rollback_steps"] == "expected a positive integer, got 0"


def test_a_checkpoint_from_before_rollback_steps_resumes_with_its_snapshot_as_the_start(new_model, toy_batch):
    """Older checkpoints hold one `snapshot` (the state after the last applied step): it becomes the start."""
    model = new_model(0)
    trajs = toy_batch(model, 2, 4, step=0)
    learner = rl_trainer(model, _cfg(2), total_steps=20)
    saved = _good_steps(learner, model, trajs, 1)[-1]
    state = learner.state_dict()
    old_format = {k: state["rollback"][k] for k in ("consecutive", "rollbacks", "lr_scale")}
    state["rollback"] = old_format | {"snapshot": {"model": saved[0],
                                                   "optimizer": copy.deepcopy(learner.optimizer.state_dict())}}
    other = rl_trainer(new_model(1), _cfg(2), total_steps=20)
    other.load_state_dict(state)
    h = _poison(other.model)
    other.update(trajs)
    assert other.update(trajs)["guard/rollbacks"] == 1.0
    h.remove()
    assert _same(_params(other.model), saved[0]) and _same_opt(_opt_state(other), saved[1])


def test_distillation_uses_the_configured_rollback_steps():
    """The distill stage copies the guard keys from `learner` by hand: rollback_steps must be among them."""
    from steprl.config import load_config
    from steprl.stages.distill import learner_config

    assert learner_config(load_config("smoke", ["learner.rollback_steps=7"])).rollback_steps == 7
