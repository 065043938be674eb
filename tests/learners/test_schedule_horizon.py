"""learner.schedule_steps: the lr schedule's horizon is a key, not the trainer's step count."""

from __future__ import annotations

import pytest

from steprl.learners.config import LearnerConfig
from steprl.learners.schedule import lr_multiplier
from steprl.learners.trainer import rl_trainer


def test_the_horizon_key_overrides_the_total_steps(new_model):
    """lr_at of a 10-step trainer with horizon 4 is the 4-step schedule, then its floor (0) past step 4."""
    cfg = LearnerConfig(lr=1.0, schedule="linear", warmup_steps=1, schedule_steps=4)
    trainer = rl_trainer(new_model(0), cfg, total_steps=10)
    expect = [lr_multiplier(s, warmup_steps=1, total_steps=4, schedule="linear") for s in range(10)]
    assert [trainer.guard.lr_at(s) for s in range(10)] == expect  # the same function on the same inputs
    assert expect[:5] == [1.0, 1.0, pytest.approx(2 / 3), pytest.approx(1 / 3), 0.0] and expect[5:] == [0.0] * 5


def test_zero_means_the_total_steps(new_model):
    cfg = LearnerConfig(lr=1.0, schedule="cosine")
    trainer = rl_trainer(new_model(0), cfg, total_steps=6)
    assert [trainer.guard.lr_at(s) for s in range(7)] == [
        lr_multiplier(s, warmup_steps=0, total_steps=6, schedule="cosine") for s in range(7)]


def test_schedule_steps_is_checked():
    assert dict(LearnerConfig(schedule_steps=-1).check())["schedule_steps"] == "expected >= 0, got -1"
