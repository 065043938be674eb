"""The one held-out evaluation: micro-batch rule, measured once per exact weights, nothing private in summary.json."""

from __future__ import annotations

import json

import torch

from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.run.files.run_dir import read_summary, write_summary
from steprl.run.loop import state as state_module
from steprl.run.loop.evaluate import HeldOut
from steprl.run.loop.state import RunState
from steprl.run.reporting.metrics import MetricsLogger


def test_micro_batch_is_the_configured_size_when_it_divides_else_the_gcd():
    assert HeldOut(0, "x", 200, 50).micro_batch_size() == 50
    assert HeldOut(0, "x", 200, 64).micro_batch_size() == 8
    assert HeldOut(0, "x", 7, 50).micro_batch_size() == 1


def test_held_out_specs_never_use_training_seeds():
    specs = HeldOut(3, "steprl/Calculator-v0", 20, 5).specs()
    assert len(specs) == 20 and all(2**31 <= s.env_seed < 2**32 for s in specs)
    assert specs == HeldOut(3, "steprl/Calculator-v0", 20, 5).specs()


def test_held_out_measures_once_per_exact_weights_and_keeps_the_cache_private(tmp_path, monkeypatch):
    cfg = load_config("smoke", [f"run.root={tmp_path}", "eval.episodes=4", "eval.micro_batch=4"])
    torch.set_num_threads(1)
    run = RunState(cfg, tmp_path, build_policy(cfg.model, cfg.tokenizer, 0), MetricsLogger(tmp_path),
                   {"stages": {}})
    plays = []
    real = state_module.evaluate
    monkeypatch.setattr(state_module, "evaluate", lambda *a, **k: plays.append(a[2]) or real(*a, **k))
    try:
        first = run.held_out("warmup", "rl", 0)
        again = run.held_out("rl", "rl", 3)  # same weights: no second play
        assert plays == ["warmup"] and again == first
        with torch.no_grad():
            next(run.policy.model.parameters()).add_(1e-3)
        run.held_out("rl", "rl", 3)
        assert plays == ["warmup", "rl"]
    finally:
        run.get_pool().close()
        run.metrics.close()
    write_summary(tmp_path, run.summary)
    assert "_held_out_cache" not in json.loads((tmp_path / "summary.json").read_text())


def test_summaries_written_by_older_versions_lose_their_private_cache(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"stages": {}, "_held_out_cache": {"ab": {}}}))
    assert "_held_out_cache" not in read_summary(tmp_path)
