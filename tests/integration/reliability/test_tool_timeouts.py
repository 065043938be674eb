"""A tool past its wall-clock limit is a fault, never an observation (issue 17).

Late once: the micro-batch is retried (inline and on Ray) and the step equals a run where the tool is
fast, with no timeout text anywhere. Late every time: that micro-batch's episodes are recorded as
errored, counted in the step's metrics and masked by the learner; the step completes.
"""

from __future__ import annotations

import copy
import json

import pytest
import relenvs  # noqa: F401  (registers reliability/*)
import torch
from relhelp import digests, pool_parts, weights_of, with_env

from steprl.learners.policy_gradient import trajectory_is_valid
from steprl.learners.trainer import rl_trainer
from steprl.rollout.faults import fault_fields
from steprl.rollout.plan import plan_step
from steprl.rollout.workers import RolloutPool

ENV = "reliability/ToolTimeoutCalc-v0"
OVERRIDES = ["rollout.executor=inline", "rollout.max_retries=2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Config, policy, and the control step: the same env whose checker is always in time."""
    from steprl.config import load_config

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tt")
    cfg = load_config("smoke", [f"run.root={root}", *OVERRIDES])
    policy, spec = pool_parts(cfg)
    marker = root / "already-late"
    marker.write_text("control: never late\n")
    specs = with_env(plan_step(cfg, 0), ENV)
    control = play(cfg, spec, policy, specs, marker=str(marker))
    return cfg, policy, spec, specs, control, root


def play(cfg, spec, policy, specs, executor: str = "inline", **env_kwargs):
    """One step on a fresh pool whose env instances get `env_kwargs`."""
    from dataclasses import replace

    rollout = replace(cfg.rollout, executor=executor, workers=1)
    pool = RolloutPool(replace(spec, env_kwargs={**spec.env_kwargs, **env_kwargs}), rollout)
    try:
        pool.set_weights(0, weights_of(policy))
        return pool.play(specs)
    finally:
        pool.close()


def observation_text(trajs, tokenizer) -> str:
    """Every non-agent token of every trajectory, decoded."""
    return "".join(tokenizer.decode([x for x, m in zip(t.tokens, t.action_mask) if not m]) for t in trajs)


def test_tool_late_once_is_retried_and_the_step_equals_a_fast_tool(world, tmp_path):
    cfg, policy, spec, specs, control, _ = world
    late = play(cfg, spec, policy, specs, marker=str(tmp_path / "late-once"))
    assert (tmp_path / "late-once").exists()  # the tool really was late once
    assert digests(late) == digests(control)
    assert not any(t.error for t in late)
    assert "time limit" not in observation_text(late, policy.tokenizer)
    assert fault_fields(late) == {"rollout/errored_episodes": 0.0, "rollout/tool_timeouts": 0.0,
                                 "rollout/over_budget": 0.0}
    print(f"\nFIGURE tool-late-once (inline): retried, {len(late)}/{len(late)} trajectories identical to the fast tool")


def test_tool_late_every_time_errors_its_micro_batch_counts_it_and_the_learner_skips_it(world):
    cfg, policy, spec, specs, control, _ = world
    seed = specs[0].env_seed
    trajs = play(cfg, spec, policy, specs, late_seeds=[seed])
    hit = {s.index for mb in _micro_batches(cfg, specs) if any(x.env_seed == seed for x in mb) for s in mb}
    assert {t.spec.index for t in trajs if t.error} == hit and len(hit) < len(trajs)
    for t in trajs:
        if t.spec.index in hit:
            assert t.error == f"tool timeout after {cfg.rollout.max_retries + 1} attempts" and not t.tokens
            assert not trajectory_is_valid(t)
        else:
            assert t.digest == next(c.digest for c in control if c.spec.index == t.spec.index)
    n = float(len(hit))
    assert fault_fields(trajs) == {"rollout/errored_episodes": n, "rollout/tool_timeouts": n,
                                   "rollout/over_budget": 0.0}
    learner = rl_trainer(copy.deepcopy(policy.model), cfg.learner, temperature=1.0, total_steps=10, pad_id=0)
    stats = learner.update(trajs)
    assert stats["guard/bad_trajectories"] == len(hit)
    print(f"\nFIGURE tool-late-always: {len(hit)}/{len(trajs)} episodes errored after "
          f"{cfg.rollout.max_retries + 1} attempts, counted, masked (bad_trajectories={len(hit)}); step completed")


def _micro_batches(cfg, specs):
    from steprl.rollout.plan import spec_micro_batches

    return spec_micro_batches(specs, cfg.rollout.micro_batch)


def test_tool_late_once_on_ray_is_retried_and_identical(world, ray_session, tmp_path):
    cfg, policy, spec, specs, control, _ = world
    late = play(cfg, spec, policy, with_env(specs, f"relenvs:{ENV}"), executor="ray", marker=str(tmp_path / "m"))
    assert (tmp_path / "m").exists()
    assert [t.digest for t in late] != [] and not any(t.error for t in late)
    fast = play(cfg, spec, policy, with_env(specs, f"relenvs:{ENV}"), marker=str(tmp_path / "m"))
    assert digests(late) == digests(fast)


def test_a_run_whose_tool_always_times_out_completes_and_logs_the_counts(smoke, tmp_path):
    from steprl.pipeline import train
    from steprl.rollout.plan import plan_step as plan

    cfg = smoke("stages=[rl]", "rl.steps=1", f"env.id=relenvs:{ENV}")
    seed = plan(cfg, 0)[0].env_seed
    cfg = smoke("stages=[rl]", "rl.steps=1", f"env.id=relenvs:{ENV}", f"env.kwargs.late_seeds=[{seed}]")
    train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r.get("stage") == "rl")
    assert row["rollout/tool_timeouts"] == row["rollout/errored_episodes"] > 0
    assert row["guard/bad_trajectories"] == row["rollout/tool_timeouts"]
