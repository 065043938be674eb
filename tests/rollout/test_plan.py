"""plan_step is pure: depends only on (config, seed, step), never on workers; eval seeds are disjoint."""

import copy

from steprl.config import load_config
from steprl.rollout.plan import eval_env_seed, plan_eval, plan_step, spec_micro_batches, train_env_seed


def test_plan_is_pure_and_worker_invariant():
    cfg = load_config("quickstart")
    a = plan_step(cfg, 3)
    cfg2 = copy.deepcopy(cfg)
    cfg2.rollout.workers = 7
    cfg2.rollout.executor = "inline"
    assert plan_step(cfg2, 3) == a == plan_step(cfg, 3)
    assert plan_step(cfg, 4) != a
    cfg3 = copy.deepcopy(cfg)
    cfg3.run.seed = 1
    assert plan_step(cfg3, 3) != a


def test_plan_structure():
    cfg = load_config("quickstart")
    specs = plan_step(cfg, 0)
    G, M = cfg.rollout.groups, cfg.rollout.group_size
    assert [s.index for s in specs] == list(range(G * M))
    for g in range(G):
        members = specs[g * M : (g + 1) * M]
        assert len({s.env_seed for s in members}) == 1          # one task per group
        assert len({s.sample_key for s in members}) == M        # distinct sampling keys
    assert len({s.env_seed for s in specs}) == G


def test_spec_micro_batches_by_index_only():
    cfg = load_config("quickstart")
    specs = plan_step(cfg, 0)
    mbs = spec_micro_batches(list(reversed(specs)), 16)
    assert [[s.index for s in mb] for mb in mbs] == [list(range(k, k + 16)) for k in range(0, len(specs), 16)]


def test_eval_seeds_never_collide_with_training_seeds():
    train = {train_env_seed(0, step, g) for step in range(200) for g in range(16)}
    evals = {eval_env_seed(0, i) for i in range(1000)}
    assert not train & evals
    assert all(s < 2**31 for s in train) and all(2**31 <= s < 2**32 for s in evals)
    assert [s.env_seed for s in plan_eval(0, "x", 5)] == [eval_env_seed(0, i) for i in range(5)]
