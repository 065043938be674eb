"""Warm-up SFT: loss on action tokens only, schedule, learning, resume, non-finite guard."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from steprl.learners.config import WarmupConfig
from steprl.learners.sft import SFTObjective, sft_batch
from steprl.learners.trainer import sft_trainer

DATA = [
    ([3, 4, 5, 6, 7, 8], [0, 0, 1, 1, 1, 1]),
    ([3, 9, 10, 11, 12], [0, 0, 1, 0, 1]),
    ([2, 13, 14, 15], [0, 1, 1, 1]),
]


def _batch_for_step(k):
    """A pure function of the step: a rotation of the tiny dataset."""
    return DATA[k % 3:] + DATA[: k % 3]


def test_loss_counts_only_action_tokens(new_model):
    trainer = sft_trainer(new_model(0), WarmupConfig(steps=5, warmup_steps=1), seed=0, pad_id=0)
    with torch.no_grad():
        base = float(trainer.objective.loss([([3, 4, 5, 6], [0, 1, 1, 0])]))
        assert float(trainer.objective.loss([([3, 4, 5, 9], [0, 1, 1, 0])])) == base  # last target not trained
        assert float(trainer.objective.loss([([3, 4, 5, 9], [0, 1, 1, 1])])) != base
    tokens, attn, mask = sft_batch(DATA, pad_id=0)
    assert tokens.shape == (3, 6) and mask.tolist()[1] == [0, 1, 0, 1, 0] and attn.sum() == 15


def test_lr_warmup_then_cosine_to_ten_percent(new_model):
    trainer = sft_trainer(new_model(0), WarmupConfig(steps=6, warmup_steps=2, lr=1.0), seed=0, pad_id=0)
    lrs = []
    for _ in range(6):
        lrs.append(trainer.current_lr())
        trainer.step += 1
    assert lrs == pytest.approx(
        [0.5, 1.0, 1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p / 4)) for p in (1, 2, 3)]
    )


def test_sft_loss_drops_by_half(new_model):
    trainer = sft_trainer(new_model(0), WarmupConfig(steps=40, warmup_steps=5, lr=1e-2), seed=0, pad_id=0)
    seen = []
    losses = trainer.run(_batch_for_step, on_step=lambda k, loss: seen.append(k))
    assert seen == list(range(40)) and len(losses) == 40
    assert losses[-1] < 0.5 * losses[0]
    assert all(math.isfinite(x) for x in losses)


def test_sft_resume_is_bitwise(new_model):
    cfg = WarmupConfig(steps=6, warmup_steps=2, lr=1e-2)
    a = sft_trainer(new_model(0), cfg, seed=0, pad_id=0)
    a.update(_batch_for_step(0))
    a.update(_batch_for_step(1))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    tail_a = a.run(_batch_for_step)
    b = sft_trainer(new_model(9), cfg, seed=0, pad_id=0)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    tail_b = b.run(_batch_for_step)
    assert tail_a == tail_b and len(tail_a) == 4
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())


def test_sft_nonfinite_step_is_skipped(new_model):
    model = new_model(0)
    trainer = sft_trainer(model, WarmupConfig(steps=5, warmup_steps=1), seed=0, pad_id=0)
    trainer.update(DATA)
    before = copy.deepcopy(model.state_dict())
    opt_before = copy.deepcopy(trainer.optimizer.state_dict()["state"])
    h = model.lm_head.weight.register_hook(lambda g: g * float("nan"))
    trainer.update(DATA)
    h.remove()
    assert trainer.counters["nonfinite"] == 1 and trainer.step == 2
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    st = trainer.optimizer.state_dict()["state"]
    assert all(torch.equal(st[i][k], opt_before[i][k]) for i in st for k in st[i])


def test_sft_grad_clip_is_configurable_and_guards_cost_nothing(new_model):
    a = sft_trainer(new_model(0), WarmupConfig(steps=3, warmup_steps=1, lr=1e-2), seed=0, pad_id=0)
    m = a.update(DATA)
    assert m["grad_norm"] > 1.0 and a.counters["grad_clipped"] == 1 and m["skipped"] == 0.0 and m["lr"] == 1e-2
    assert a.guard.rollback.newer is None and a.guard.spike_loss.values == []  # no snapshot, no spike window
    b = sft_trainer(new_model(0), WarmupConfig(steps=3, warmup_steps=1, lr=1e-2, grad_clip=0.0), seed=0, pad_id=0)
    assert b.update(DATA)["loss"] == m["loss"] and b.counters["grad_clipped"] == 0
    assert any(not torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    with pytest.raises(ValueError, match="grad_clip"):
        sft_trainer(new_model(0), WarmupConfig(grad_clip=-1.0), seed=0, pad_id=0)


def test_length_buckets_sort_and_cut():
    from steprl.learners.sft import length_buckets

    ex = [([1] * n, [0] * n) for n in (5, 2, 9, 2, 7)]
    parts = length_buckets(ex, 2)
    assert [[len(t) for t, _ in p] for p in parts] == [[2, 2], [5, 7, 9]]
    assert parts[0][0] is ex[1] and parts[0][1] is ex[3]  # ties keep their order
    assert len(length_buckets(ex, 9)) == 5 and length_buckets(ex, 1) == [sorted(ex, key=lambda e: len(e[0]))]


class _GradCapture:
    """Stands in for the GuardedOptimizer in one SFTObjective.update: keeps the accumulated gradient, steps nothing."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.grads = model, None

    def begin(self, step: int) -> float:
        return 0.0

    def step(self, loss: float, **_kw) -> tuple[bool, float]:
        self.grads = [p.grad.detach().clone() for p in self.model.parameters()]
        return False, 0.0


# Float32 rounding bound for comparing the one-batch and the bucketed gradient (two code paths: other matmul
# shapes, other summation order). Each gradient entry is a chain of reductions; a float32 sum of n terms is off by
# at most gamma_n ~ n u (u = 2^-24, Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., eq. 4.4),
# and the chain here has at most DEPTH = 16 of them (forward and backward through embedding, two RMSNorms, the
# Q/K/V and score products, softmax, output projection, gate/up and down MLP products, final norm, lm_head and
# log-softmax), the longest of N_MAX = 64 terms (the tiny model's intermediate size; hidden 32, vocab 16, at most 55
# tokens in a batch). Both paths may err in opposite directions, hence the 2. Measured (AMD EPYC Zen 3, AVX2):
# 2.3e-7, far inside 2 * 16 * 64 * u = 1.2e-4; a wrong normaliser (bucket's count instead of the batch's) is off by
# more than 10%.
DEPTH, N_MAX, U32 = 16, 64, 2.0**-24
BUCKET_RTOL = 2 * DEPTH * N_MAX * U32


def test_length_buckets_give_the_token_mean_gradient_with_less_padding(new_model):
    """Same loss and gradient as one padded batch (to a float32 rounding bound: the paths differ), fewer tokens
    computed, and the bucketed update is deterministic to the bit (one path compared with itself).

    The gradient is compared, not weights after an AdamW step: Adam divides by sqrt(v), so a gradient entry near
    zero that differs in its last bits moves its weight by up to lr in either direction (what made an atol on
    weights pass on one CPU and fail on another)."""
    data = [*DATA, ([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]), ([2, 5], [0, 1])]
    fed, got = {}, {}
    for n in (1, 3):
        model = new_model(0)
        model.register_forward_pre_hook(
            lambda _m, _a, kw, n=n: fed.__setitem__(n, fed.get(n, 0) + kw["input_ids"].numel()), with_kwargs=True
        )
        capture = _GradCapture(model)
        loss = SFTObjective(model, pad_id=0, length_buckets=n).update(capture, 0, data)["loss"]
        got[n] = (loss, capture.grads)
    assert fed[1] == 5 * 11 and fed[3] == 2 * 4 + 1 * 5 + 2 * 11  # tokens computed: 55 vs 35 per update
    (loss1, g1), (loss3, g3) = got[1], got[3]
    assert abs(loss3 - loss1) <= BUCKET_RTOL * abs(loss1)
    for a, b in zip(g1, g3):
        assert float((a - b).norm()) <= BUCKET_RTOL * float(a.norm()), "bucketed gradient is not the token mean"

    def trained() -> tuple[float, list[torch.Tensor]]:
        model = new_model(0)
        trainer = sft_trainer(model, WarmupConfig(steps=2, warmup_steps=0, lr=1e-2, length_buckets=3), seed=0,
                              pad_id=0)
        loss = trainer.update(data)["loss"]
        return loss, [p.detach().clone() for p in model.parameters()]

    (la, wa), (lb, wb) = trained(), trained()
    assert la == lb and all(torch.equal(a, b) for a, b in zip(wa, wb))


def test_length_buckets_is_checked():
    assert ("length_buckets", "expected a positive integer, got 0") in WarmupConfig(length_buckets=0).check()
    assert any(k == "length_buckets" for k, _ in WarmupConfig(batch_size=4, length_buckets=5).check())
