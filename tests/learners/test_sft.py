"""Warm-up SFT: loss on action tokens only, schedule, learning, resume, non-finite guard."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from steprl.learners.config import WarmupConfig
from steprl.learners.sft import sft_batch
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


def test_length_buckets_give_the_token_mean_gradient_with_less_padding(new_model):
    """Same loss and gradient as one padded batch (to float tolerance), and deterministic to the bit."""
    data = [*DATA, ([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]), ([2, 5], [0, 1])]
    out, fed = {}, {}
    for n, seed_model in ((1, 0), (3, 0), (3, 0)):
        model = new_model(seed_model)
        model.register_forward_pre_hook(
            lambda _m, _a, kw, n=n: fed.__setitem__(n, fed.get(n, 0) + kw["input_ids"].numel()), with_kwargs=True
        )
        trainer = sft_trainer(model, WarmupConfig(steps=2, warmup_steps=0, lr=1e-2, length_buckets=n), seed=0,
                              pad_id=0)
        loss = trainer.update(data)["loss"]
        out.setdefault(n, []).append((loss, [p.detach().clone() for p in model.parameters()]))
    assert fed[1] == 5 * 11 and fed[3] == 2 * (2 * 4 + 1 * 5 + 2 * 11)  # tokens computed: 55 vs 35 per update
    (loss1, w1), = out[1]
    (loss3, w3), (loss3b, w3b) = out[3]
    assert loss3 == pytest.approx(loss1, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(w1, w3))
    assert loss3 == loss3b and all(torch.equal(a, b) for a, b in zip(w3, w3b))


def test_length_buckets_is_checked():
    assert ("length_buckets", "expected a positive integer, got 0") in WarmupConfig(length_buckets=0).check()
    assert any(k == "length_buckets" for k, _ in WarmupConfig(batch_size=4, length_buckets=5).check())
