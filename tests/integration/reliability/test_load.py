"""Load: a 1,000-episode step on 2 Ray workers with bounded memory; the object store does not grow over 50 steps."""

from __future__ import annotations

import os
import time

from relhelp import plasma_usage, pool_parts, proc_kib, weights_of

from steprl.rollout.plan import plan_step
from steprl.rollout.workers import RolloutPool


def _cfg(root, *overrides):
    from steprl.config import load_config

    return load_config("smoke", [f"run.root={root}", "rollout.executor=ray", "rollout.workers=2", *overrides])


def test_1000_episode_step_on_2_workers_has_bounded_memory(ray_session, tmp_path):
    cfg = _cfg(tmp_path, "rollout.groups=125", "rollout.group_size=8", "rollout.micro_batch=50",
               "rollout.sampling.max_new_tokens=8")
    policy, spec = pool_parts(cfg)
    pool = RolloutPool(spec, cfg.rollout)
    try:
        pool.set_weights(0, weights_of(policy))
        pids = pool.pids()
        small = plan_step(cfg, 0)[:100]
        pool.play(small)  # warm: first-call allocations are not the step's cost
        driver0 = proc_kib(os.getpid(), "VmRSS")
        workers0 = [proc_kib(p, "VmRSS") for p in pids]
        specs = plan_step(cfg, 0)
        t0 = time.perf_counter()
        trajs = pool.play(specs)
        wall = time.perf_counter() - t0
        driver1 = proc_kib(os.getpid(), "VmRSS")
        peaks = [proc_kib(p, "VmHWM") for p in pids]
    finally:
        pool.close()
    assert len(trajs) == 1000 and [t.spec.index for t in trajs] == list(range(1000))
    tokens = sum(len(t.tokens) for t in trajs)
    growth = (driver1 - driver0) / 1024
    print(
        f"\nFIGURE load-1000: {wall:.1f}s, {tokens:,} tokens; driver RSS {driver0 / 1024:.0f} -> "
        f"{driver1 / 1024:.0f} MiB "
        f"(+{growth:.0f}), worker peak RSS {[round(p / 1024) for p in peaks]} MiB "
        f"(before the step {[round(w / 1024) for w in workers0]})"
    )
    assert growth < 200
    assert max(peaks) < 1536 * 1024
    assert max(p - w for p, w in zip(peaks, workers0)) < 300 * 1024


def test_object_store_does_not_grow_over_50_weight_syncs(ray_session, tmp_path):
    cfg = _cfg(tmp_path, "rollout.groups=1", "rollout.group_size=2", "rollout.micro_batch=1",
               "rollout.sampling.max_new_tokens=4")
    policy, spec = pool_parts(cfg)
    pool = RolloutPool(spec, cfg.rollout)
    usage = []
    try:
        for step in range(50):
            w = weights_of(policy)
            next(iter(w.values())).add_(step * 1e-3)  # a new version each step
            pool.set_weights(step, w)
            trajs = pool.play(plan_step(cfg, step))
            assert {t.policy_version for t in trajs} == {step}
            if step in (0, 9, 49):
                usage.append(plasma_usage())
        deadline = time.time() + 15  # Ray frees dropped objects asynchronously (batched): let it settle
        while plasma_usage()[1] > usage[0][1] and time.time() < deadline:
            time.sleep(0.5)
        settled = plasma_usage()
    finally:
        pool.close()
    print(f"\nFIGURE object-store: (MiB, objects) after steps 1/10/50: {usage}; settled {settled} "
          f"after {15 - (deadline - time.time()):.1f}s")
    assert settled[1] <= usage[0][1] + 1  # no weight version left behind
    assert settled[0] <= usage[0][0] + 1
