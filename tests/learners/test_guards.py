"""Guards (docs/numerics.md#guards): each test fails if its guard is removed."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from steprl.learners.guards import (
    RollbackGuard,
    SpikeDetector,
    TrainingDivergedError,
    clip_grad_norm,
    grad_norm,
    nonfinite_check,
)


def _params_with_grads(*grads):
    ps = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(len(g)))
        p.grad = torch.tensor(g, dtype=torch.float32)
        ps.append(p)
    return ps


def test_nonfinite_check_zeroes_grads_and_vetoes():
    ps = _params_with_grads([1.0, float("nan")], [2.0])
    assert nonfinite_check(0.5, grad_norm(ps), ps) is True
    assert all(p.grad.abs().sum() == 0 for p in ps)
    ps = _params_with_grads([1.0], [2.0])
    assert nonfinite_check(float("inf"), 1.0, ps) is True and ps[1].grad.item() == 0.0
    ps = _params_with_grads([1.0], [2.0])
    assert nonfinite_check(0.5, grad_norm(ps), ps) is False and ps[1].grad.item() == 2.0


def test_clip_grad_norm_returns_preclip_norm_and_bounds_postclip_norm():
    ps = _params_with_grads([3.0, 0.0], [4.0])
    assert clip_grad_norm(ps, 1.0) == pytest.approx(5.0)
    assert grad_norm(ps) <= 1.0 and grad_norm(ps) == pytest.approx(1.0, abs=1e-5)
    assert ps[0].grad[0].item() == pytest.approx(0.6, abs=1e-6)
    ps = _params_with_grads([0.3], [0.4])
    assert clip_grad_norm(ps, 1.0) == pytest.approx(0.5) and ps[0].grad.item() == pytest.approx(0.3)
    ps = _params_with_grads([30.0], [40.0])
    assert clip_grad_norm(ps, 0.0) == pytest.approx(50.0) and ps[1].grad.item() == 40.0  # disabled
    ps = _params_with_grads([float("inf")], [1.0])
    assert math.isinf(clip_grad_norm(ps, 1.0)) and ps[1].grad.item() == 1.0


def test_spike_flagged_exactly_once():
    det = SpikeDetector(window=10, factor=10.0, min_history=5)
    normal = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02]
    assert [det.check(x) for x in normal] == [False] * 7
    assert det.check(50.0) is True
    assert [det.check(x) for x in normal] == [False] * 7
    assert det.flagged == 1
    assert det.check(float("nan")) is False and len(det.values) == 10


def test_spike_needs_history_and_uses_mad_for_values_around_zero():
    det = SpikeDetector(window=20, factor=10.0, min_history=5)
    assert [det.check(x) for x in (1.0, 1.0, 1.0, 1.0)] == [False] * 4
    assert det.check(100.0) is False  # only 4 values of history
    det = SpikeDetector(window=20, factor=10.0, min_history=5)
    noise = [0.3, -0.2, 0.25, -0.35, 0.1, -0.05, 0.2, -0.3]  # median ~0: |median| alone would flag everything
    assert not any(det.check(x) for x in noise + [0.9, -0.8])
    assert det.check(-40.0) is True


def test_spike_floor_keeps_a_near_zero_loss_window_from_flagging_small_values():
    tiny = [1e-9, -2e-9, 3e-9, 0.0, -1e-9, 2e-9]  # PG loss with centred advantages
    strict = SpikeDetector(window=20, factor=10.0, min_history=5, floor=1e-6)
    floored = SpikeDetector(window=20, factor=10.0, min_history=5, floor=0.1)
    for x in tiny:
        strict.check(x)
        floored.check(x)
    assert strict.check(0.05) is True  # without the floor a KL-sized loss looks like a spike
    assert floored.check(0.05) is False and floored.check(2.0) is True


def test_spike_state_round_trip():
    det = SpikeDetector(window=4, factor=10.0, min_history=2)
    for x in (1.0, 2.0, 3.0, 4.0, 5.0):
        det.check(x)
    other = SpikeDetector(window=4, factor=10.0, min_history=2)
    other.load_state_dict(det.state_dict())
    assert other.values == [2.0, 3.0, 4.0, 5.0] and other.threshold() == det.threshold() == 30.0  # lower median 3


def _model_opt():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, foreach=False)
    return model, opt


def _train(model, opt):
    opt.zero_grad()
    model(torch.ones(1, 3)).sum().backward()
    opt.step()


def test_rollback_restores_last_good_state_and_scales_lr():
    model, opt = _model_opt()
    guard = RollbackGuard(max_consecutive_skips=2, max_rollbacks=1, lr_factor=0.5)
    _train(model, opt)
    guard.good(model, opt)
    good_params = copy.deepcopy(model.state_dict())
    good_opt = copy.deepcopy(opt.state_dict())
    _train(model, opt)  # a "bad" change that the rollback must undo
    assert guard.skipped(model, opt) is False
    assert guard.skipped(model, opt) is True
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good_params.items())
    st = opt.state_dict()["state"]
    assert all(torch.equal(st[i][k], good_opt["state"][i][k]) for i in st for k in st[i])
    assert guard.rollbacks == 1 and guard.lr_scale == 0.5 and guard.consecutive == 0
    guard.skipped(model, opt)
    with pytest.raises(TrainingDivergedError, match="max_rollbacks=1"):
        guard.skipped(model, opt)


def test_no_rollbacks_keeps_no_snapshot_and_stops_on_the_streak():
    """max_rollbacks 0: nothing is copied (checkpoints hold weights + AdamW only), a skip streak stops the run."""
    model, opt = _model_opt()
    guard = RollbackGuard(max_consecutive_skips=2, max_rollbacks=0, lr_factor=0.5, steps=1)
    guard.start(model, opt)
    for _ in range(3):
        _train(model, opt)
        guard.good(model, opt)
    state = guard.state_dict()
    assert state["newer"] is None and state["older"] is None
    assert guard.skipped(model, opt) is False
    with pytest.raises(TrainingDivergedError, match="max_rollbacks=0"):
        guard.skipped(model, opt)
    kept = RollbackGuard(max_consecutive_skips=2, max_rollbacks=1, lr_factor=0.5, steps=1)
    kept.start(model, opt)
    kept.good(model, opt)
    assert kept.state_dict()["newer"] is not None and kept.state_dict()["older"] is not None


def test_rollback_snapshot_is_not_aliased_and_round_trips():
    model, opt = _model_opt()
    guard = RollbackGuard(1, 5, 0.5)
    _train(model, opt)
    guard.good(model, opt)
    other = RollbackGuard(1, 5, 0.5)
    other.load_state_dict(guard.state_dict())
    snap = copy.deepcopy(model.state_dict())
    _train(model, opt)
    _train(model, opt)
    assert other.skipped(model, opt) is True
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snap.items())
    _train(model, opt)
    assert other.skipped(model, opt) is True  # the snapshot survived the first restore unchanged
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snap.items())
    assert other.lr_scale == 0.25


def test_guarded_optimizer_reads_gradients_only_through_reduce_gradients():
    """The data-parallel hook: what reduce_gradients leaves in .grad is what the norm, checks, clip and step see."""
    from steprl.learners.config import LearnerConfig
    from steprl.learners.guarded_optimizer import GUARD_COUNTERS, GuardedOptimizer

    class Doubling(GuardedOptimizer):
        def reduce_gradients(self):
            params = super().reduce_gradients()
            for p in params:
                p.grad.mul_(2.0)  # e.g. the sum over two identical replicas
            return params

    norms = []
    for cls in (GuardedOptimizer, Doubling):
        model = torch.nn.Linear(3, 2)
        with torch.no_grad():
            model.weight.fill_(0.5), model.bias.fill_(0.1)
        opt = cls(model, LearnerConfig(grad_clip=0.0), 1, ("extra",))
        assert tuple(opt.counters) == (*GUARD_COUNTERS, "extra")
        opt.begin(0)
        model(torch.ones(1, 3)).sum().backward()
        norms.append(opt.step(1.0, has_targets=True)[1])
    assert norms[1] == pytest.approx(2 * norms[0]) and norms[0] == pytest.approx(math.sqrt(8.0))
