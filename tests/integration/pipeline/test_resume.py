"""Resume is exact: train N steps == train j steps, stop, resume to N — weights, optimizer, rollouts bitwise."""

import shutil
from pathlib import Path

import pytest
from digests import tree_digest

from steprl.errors import SteprlError
from steprl.pipeline import resume, train
from steprl.run.files.checkpoint import latest_good, verify
from steprl.run.files.run_dir import open_run_dir


def test_resume_at_step_boundary_is_bitwise_identical(smoke):
    full = smoke("rl.steps=4", "rl.checkpoint_every=1", name="full")
    s_full = train(full)
    part = smoke("rl.steps=2", "rl.checkpoint_every=1", name="part")
    train(part)
    run_dir, cfg = open_run_dir(part.run.root + "/part")
    cfg.rl.steps = 4
    resume(run_dir, cfg)
    a, b = tree_digest(run_dir.parent / "full", 4), tree_digest(run_dir, 4)
    assert a == b
    assert s_full["stages"]["rl"]["steps"] == 4


def test_resume_after_a_step_lost_mid_way(smoke):
    """Simulates a crash in the middle of step 3: the step's checkpoint never became complete."""
    full = smoke("rl.steps=4", "rl.checkpoint_every=1", name="full")
    train(full)
    crash = smoke("rl.steps=4", "rl.checkpoint_every=1", name="crash")
    train(crash)
    run_dir = Path(crash.run.root) / "crash"
    # tear the newest checkpoint (as if killed while writing it) and drop its rollouts and metrics
    shutil.rmtree(run_dir / "checkpoints" / "step_000004")
    torn = run_dir / "checkpoints" / "step_000003"
    (torn / "learner.json").write_text("{}")  # a byte changed: the manifest no longer verifies
    (run_dir / "rollouts" / "step_000003.jsonl.gz").unlink()
    with pytest.raises(SteprlError, match="does not match its sha256"):
        verify(torn)
    assert latest_good(run_dir / "checkpoints").step == 2
    _, cfg = open_run_dir(run_dir)
    resume(run_dir, cfg)
    assert tree_digest(run_dir.parent / "full", 4) == tree_digest(run_dir, 4)


def test_train_refuses_existing_run_dir(smoke):
    cfg = smoke("rl.steps=1", name="once")
    train(cfg)
    with pytest.raises(SteprlError, match="already exists.*steprl resume"):
        train(cfg)


def test_a_checkpoint_of_a_stage_marks_every_earlier_stage_done():
    """A driver killed before summary.json recorded the warm-up as complete must not warm up again when it
    resumes from an RL checkpoint (found by bench/chaos.py: the warm-up re-ran and re-logged its rows)."""
    from steprl.config import load_config
    from steprl.pipeline import completed_stages
    from steprl.run.files.checkpoint import Checkpoint

    cfg = load_config("smoke", ["rl.steps=10"])
    rl_ck = Checkpoint(path=Path("x"), step=6, state={"stage": "rl", "step": 6})
    assert "warmup" in completed_stages(cfg, {"completed": []}, rl_ck)
    assert "rl" not in completed_stages(cfg, {"completed": []}, rl_ck)  # rl reopens at step 6
    warm_ck = Checkpoint(path=Path("x"), step=0, state={"stage": "warmup", "step": 0})
    assert completed_stages(cfg, {"completed": []}, warm_ck) == {"warmup"}


def test_a_checkpoint_stores_the_weights_once(smoke):
    """learner.safetensors holds the optimizer, not a second copy of model/'s weights, which loading puts back."""
    import json

    import torch

    from steprl.agents.policy import load_policy

    cfg = smoke("stages=[warmup,rl]", "rl.steps=1", "learner.max_rollbacks=0", name="once")
    train(cfg)
    ck = verify(Path(cfg.run.root) / "once/checkpoints/step_000001")
    keys = [k for k, _ in json.loads((ck.path / "learner.json").read_text())["__dict__"]]
    assert "optimizer" in keys and "model" not in keys
    model_bytes = sum(f.stat().st_size for f in ck.model_dir.glob("*.safetensors"))
    assert (ck.path / "learner.safetensors").stat().st_size < 2.2 * model_bytes  # AdamW's two moments and no more
    weights = ck.learner_state()["model"]
    loaded = load_policy(ck.model_dir).model.state_dict()
    assert set(weights) <= set(loaded) and all(torch.equal(loaded[k], w) for k, w in weights.items())
