"""A run whose guards skipped most of its steps says so; one that skipped all of them fails (exit 1).

The NaN is planted as a registered policy loss (the non-finite guard skips a step whose loss is NaN), so
the real guard, step loop, summary and CLI are exercised. The smoke preset's step is one micro-batch of
8 trajectories in one epoch, so the loss is called once per RL step.
"""

from __future__ import annotations

import json

import pytest
import torch

from steprl.cli import main
from steprl.learners.losses import LOSSES, PolicyLoss, get_loss

RUN = ["stages=[rl]", "rl.steps=3", "rl.checkpoint_every=3", "eval.episodes=4", "eval.micro_batch=4"]


def _nan_for_first(n: int):
    """A ppo loss that is NaN on its first `n` calls (RL steps 0..n-1) and plain ppo after."""
    calls = [0]
    ppo = get_loss("ppo")

    def loss(logp, old_logp, adv, mask, cfg):
        out = ppo(logp, old_logp, adv, mask, cfg)
        calls[0] += 1
        if calls[0] <= n:
            return PolicyLoss(out.loss * float("nan"), out.clipped, out.ratio)
        return out

    return loss


def _train(tmp_path, capsys, monkeypatch, nan_steps: int) -> tuple[int, dict, list[str], list[dict]]:
    monkeypatch.setitem(LOSSES, "planted_nan", _nan_for_first(nan_steps))
    prev = torch.get_num_threads()
    try:
        code = main(["train", "smoke", f"run.root={tmp_path}", "run.name=s", "learner.loss=planted_nan", *RUN])
    finally:
        torch.set_num_threads(prev)
    out = capsys.readouterr()
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    return code, summary, (out.out + out.err).strip().splitlines(), [r for r in rows if r["stage"] == "rl"]


def test_a_run_that_skipped_every_step_exits_1_with_the_count(tmp_path, capsys, monkeypatch):
    code, summary, lines, rl = _train(tmp_path, capsys, monkeypatch, nan_steps=3)
    assert [r["skipped"] for r in rl] == [1.0, 1.0, 1.0]  # the plant worked: the guard skipped each step
    assert code == 1
    assert summary["stages"]["rl"]["skipped_steps"] == 3
    assert summary["stages"]["rl"]["mostly_skipped"] is True
    assert "rl: 3 of 3 steps skipped" in lines[-1], lines[-3:]


def test_a_run_that_skipped_most_steps_warns_and_records_it(tmp_path, capsys, monkeypatch):
    code, summary, lines, rl = _train(tmp_path, capsys, monkeypatch, nan_steps=2)
    assert [r["skipped"] for r in rl] == [1.0, 1.0, 0.0]
    assert code == 0  # one step trained: a warning, not a failure
    assert summary["stages"]["rl"]["skipped_steps"] == 2
    assert summary["stages"]["rl"]["mostly_skipped"] is True
    assert "rl: 2 of 3 steps skipped" in lines[-1] and "warning" in lines[-1], lines[-3:]


@pytest.mark.parametrize("nan_steps", [1])
def test_a_run_that_skipped_at_most_half_has_no_warning(tmp_path, capsys, monkeypatch, nan_steps):
    code, summary, lines, _ = _train(tmp_path, capsys, monkeypatch, nan_steps=nan_steps)
    assert code == 0
    assert summary["stages"]["rl"]["skipped_steps"] == nan_steps
    assert summary["stages"]["rl"]["mostly_skipped"] is False
    assert not any("steps skipped" in ln for ln in lines)
