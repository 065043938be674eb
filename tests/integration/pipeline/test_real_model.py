"""The real model through steprl: SmolLM2-135M-Instruct from its packaged GGUF, the `smollm2` preset's task and
chat format, cut to 3 of its 30 decoder layers so 2-step runs fit CI (its own tokenizer, ChatML template, 49,152
vocabulary, embeddings and the kept layers' weights). Replay of a step gives identical tokens and verified weights;
a step at learner world size 2, resumed at world size 1, is bitwise the uninterrupted world-size-1 run; the eval
table has the base model's row."""

from __future__ import annotations

import hashlib
import json

import pytest
from digests import tree_digest

from steprl.config import load_config
from steprl.pipeline import resume, train
from steprl.run.files.run_dir import open_run_dir

pytestmark = pytest.mark.slow
SHORT = ["warmup.steps=2", "warmup.batch_size=2", "warmup.length_buckets=1", "warmup.cache=true",
         "rollout.groups=1", "rollout.group_size=2", "rollout.micro_batch=2", "rollout.sampling.max_new_tokens=12",
         "learner.micro_batch=2", "learner.threads_per_rank=1", "learner.cpus_per_rank=0.5", "learner.lr=1e-4",
         "learner.entropy_coef=0.05",  # rewards are all 0 on a 3-layer cut: entropy moves the weights
         "rl.steps=2", "rl.checkpoint_every=1", "eval.episodes=2", "eval.micro_batch=2"]


@pytest.fixture(scope="module")
def small_smollm2(smollm2_dir, tmp_path_factory):
    """SmolLM2-135M-Instruct with decoder layers 0, 10 and 20 kept, as a save_pretrained directory."""
    from steprl.agents.model import every_kth_layer, load_model
    from steprl.agents.tokenizer import load_tokenizer

    entry, _ = smollm2_dir
    out = tmp_path_factory.mktemp("smollm2-3-layers")
    every_kth_layer(load_model(entry), 10).save_pretrained(str(out))
    load_tokenizer(entry).save_pretrained(str(out))
    return out


def _cfg(root, model_dir, name, *extra):
    return load_config("smollm2", [f"run.root={root}", f"run.name={name}", f"model.path={model_dir}",
                                   f"tokenizer.path={model_dir}", *SHORT, *extra])


def _replay(capsys, run_dir, step):
    from steprl.cli import main

    capsys.readouterr()
    rc = main(["replay", str(run_dir), "--step", str(step)])
    return rc, capsys.readouterr().out


def test_real_model_replays_resumes_and_agrees_across_world_sizes(small_smollm2, tmp_path, capsys):
    full = train(_cfg(tmp_path, small_smollm2, "full", "stages=[warmup,rl,eval]"))
    run_dir = tmp_path / "full"
    table = full["stages"]["eval"]["table"]
    assert "base (pretrained)" in table and "warm-up (SFT)" in table and "teacher (rl policy)" in table
    ck = run_dir / "checkpoints"
    moved = [hashlib.sha256((ck / f"step_{s:06d}/model/model.safetensors").read_bytes()).hexdigest() for s in (0, 2)]
    assert moved[0] != moved[1], "the learner never moved: the comparisons below would prove nothing"
    rl_rows = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["stage"] == "rl"]
    for r in rl_rows:  # inline plays inside submit: the play's own clock, not the ~1e-5 s wait the loop sees
        assert r["play_wait_s"] <= r["play_time_s"] <= r["step_time_s"] and r["play_time_s"] > 1e-3, r
    assert 0 < full["stages"]["warmup"]["driver_peak_rss_gb"] <= full["driver_peak_rss_gb"]

    rc, out = _replay(capsys, run_dir, 1)
    assert rc == 0, out
    assert "2/2 trajectories identical (step 1, policy version 1)" in out and "weights verified" in out

    # step 1 at learner world size 2, stopped, then resumed at world size 1 for step 2: equal to the uninterrupted
    # world-size-1 run only if the 2-rank update of step 1 is bitwise the 1-rank one (step 2's rollouts are
    # played and its update made from it) and resume loses nothing
    train(_cfg(tmp_path, small_smollm2, "part", "stages=[warmup,rl]", "rl.steps=1", "learner.world_size=2"))
    part_dir, part_cfg = open_run_dir(tmp_path / "part")
    assert part_cfg.learner.world_size == 2
    part_cfg.rl.steps, part_cfg.learner.world_size = 2, 1
    resume(part_dir, part_cfg)
    assert tree_digest(part_dir, 2) == tree_digest(run_dir, 2)
