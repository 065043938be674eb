"""`steprl resume RUN rl.steps=M` with a decaying lr schedule keeps the run's schedule horizon.

The lr of a linear or cosine schedule depends on its horizon (learner.schedule_steps, 0: rl.steps). Extending
a run must not move it, or the lr of the steps after the resume point would be neither the original run's
nor any uninterrupted run's. So resume records the old rl.steps as learner.schedule_steps, and the extended
run equals bitwise an uninterrupted run with rl.steps=M and that horizon.
"""

import argparse
import json
from pathlib import Path

import pytest
from digests import tree_digest

from steprl.cli import resume as resume_cli
from steprl.errors import ConfigError
from steprl.pipeline import train
from steprl.run.files.run_dir import open_run_dir

LINEAR = ("learner.schedule=linear", "rl.checkpoint_every=1", "stages=[rl]")


def _rl_lrs(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["lr"] for r in sorted((r for r in rows if r.get("stage") == "rl"), key=lambda r: r["step"])]


def test_extending_a_linear_schedule_keeps_its_horizon_and_equals_an_uninterrupted_run(smoke):
    part = smoke(*LINEAR, "rl.steps=2", name="part")
    train(part)
    run_dir = Path(part.run.root) / "part"
    resume_cli.run(argparse.Namespace(run_dir=str(run_dir), overrides=["rl.steps=4"]))
    lr = part.learner.lr
    # linear over the 2-step horizon: 1, 1/2, then min_ratio (0 for RL) past it. Each value is one float64
    # product of lr with an exact multiplier (1, 0.5, 0), so == is exact.
    assert _rl_lrs(run_dir) == [lr, lr * 0.5, 0.0, 0.0]
    _, cfg = open_run_dir(run_dir)
    assert (cfg.rl.steps, cfg.learner.schedule_steps) == (4, 2)  # the horizon is recorded in config.yaml
    full = smoke(*LINEAR, "rl.steps=4", "learner.schedule_steps=2", name="full")
    train(full)
    assert _rl_lrs(Path(full.run.root) / "full") == _rl_lrs(run_dir)
    assert tree_digest(Path(full.run.root) / "full", 4) == tree_digest(run_dir, 4)


def test_schedule_steps_is_not_a_resume_override(smoke):
    part = smoke(*LINEAR, "rl.steps=1", name="once")
    train(part)
    with pytest.raises(ConfigError, match="learner.schedule_steps"):
        resume_cli.run(argparse.Namespace(run_dir=str(Path(part.run.root) / "once"),
                                          overrides=["rl.steps=3", "learner.schedule_steps=3"]))
