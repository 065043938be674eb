"""Rollout workers (Ray actors) killed or crashing mid-step: the step's data is unchanged, or a clear RolloutError.

Figures (printed, copied into RELIABILITY.md): kills landing mid-step, identical steps, restarts, error latency.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from relhelp import digests, pool_parts, weights_of, with_env

from steprl.rollout.plan import plan_step
from steprl.rollout.seeding import derive
from steprl.rollout.workers import RolloutError, RolloutPool

KILLS = 10
SEED = 1234
# 32 episodes in 8 micro-batches of 4: long enough (~0.3-1 s) to be hit mid-step.
OVERRIDES = ["rollout.executor=ray", "rollout.workers=2", "rollout.groups=8", "rollout.group_size=4",
             "rollout.micro_batch=4"]


@pytest.fixture(scope="module")
def setup(ray_session, tmp_path_factory):
    """A smoke-sized policy, its step-0 specs and the undisturbed step's digests (Ray pool and inline)."""
    from steprl.config import load_config

    cfg = load_config("smoke", [f"run.root={tmp_path_factory.mktemp('r')}", *OVERRIDES])
    policy, spec = pool_parts(cfg)
    specs = plan_step(cfg, 0)
    return cfg, policy, spec, specs


def _pool(setup, **cfg_changes):
    cfg, policy, spec, _ = setup
    rc = cfg.rollout
    for k, v in cfg_changes.items():
        setattr(rc, k, v)
    pool = RolloutPool(spec, rc)
    pool.set_weights(0, weights_of(policy))
    return pool


def _wait_for_returned(pool: RolloutPool, count: int, th: threading.Thread) -> None:
    """Block until the pool has `count` micro-batches back since it was made (or the play ended, or 60 s)."""
    deadline = time.monotonic() + 60
    while pool.micro_batches_done < count and th.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)


@pytest.mark.slow
def test_worker_killed_mid_step_10_times_gives_identical_steps(setup):
    cfg, policy, spec, specs = setup
    inline_cfg = type(cfg.rollout)(**{**cfg.rollout.__dict__, "executor": "inline"})
    inline = RolloutPool(spec, inline_cfg)
    inline.set_weights(0, weights_of(policy))
    want = digests(inline.play(specs))
    n_mbs = len(specs) // cfg.rollout.micro_batch
    pool = _pool(setup, max_retries=3)
    try:
        t0 = time.perf_counter()
        undisturbed = pool.play(specs)
        t_ref = time.perf_counter() - t0
        assert digests(undisturbed) == want  # 2 Ray workers == 1 inline worker, bit for bit
        identical = mid_step = busy = 0
        for i in range(KILLS):
            # The kill lands after a seeded count of returned micro-batches (1 .. n-3), not after a time: with
            # 3 or more still to come the step is certainly running, on a loaded machine as on an idle one.
            after = 1 + derive(SEED, "kill-after", i) % (n_mbs - 3)
            victim = derive(SEED, "kill-victim", i) % len(pool.workers)
            pids = pool.pids()
            restarts = pool.restarts
            out: dict = {}
            base = pool.micro_batches_done
            th = threading.Thread(target=lambda out=out: out.update(trajs=pool.play(specs)), daemon=True)
            th.start()
            _wait_for_returned(pool, base + after, th)
            running = th.is_alive() and pool.micro_batches_done - base < n_mbs
            os.kill(pids[victim], signal.SIGKILL)
            th.join(180)
            assert not th.is_alive(), "play hung after a worker was killed"
            got = out["trajs"]
            assert len(got) == len(specs) and len({t.spec.index for t in got}) == len(specs)  # nothing lost or doubled
            ok = digests(got) == want
            mid_step += running
            busy += running and pool.restarts == restarts + 1  # its micro-batch was re-played in this step
            if pool.restarts == restarts:  # the victim had no work left in this step: the next one meets it dead
                ok = ok and digests(pool.play(specs)) == want
            assert pool.restarts == restarts + 1  # replaced once, weights re-sent (else play raises a version error)
            identical += ok
        print(f"\nFIGURE kill-mid-step: {identical}/{KILLS} identical, {mid_step}/{KILLS} kills landed mid-step, "
              f"{busy}/{KILLS} hit the victim mid-micro-batch, "
              f"undisturbed step {t_ref:.2f}s, restarts {pool.restarts}")
        assert identical == KILLS
        assert mid_step == KILLS and busy >= 1
    finally:
        pool.close()


def _kill_all_rollout_workers(stop: threading.Event, killed: list[int]) -> None:
    """Keep SIGKILLing every process whose title is a RolloutWorker actor until `stop` is set."""
    me = os.getuid()
    while not stop.is_set():
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if d.stat().st_uid != me or not (d / "cmdline").read_bytes().startswith(b"ray::RolloutWorker"):
                    continue
                os.kill(int(d.name), signal.SIGKILL)
                killed.append(int(d.name))
            except (OSError, ValueError):
                continue
        time.sleep(0.02)


def test_more_kills_than_max_retries_is_a_clear_error_without_hang(setup):
    _, _, _, specs = setup
    pool = _pool(setup, max_retries=1)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_all_rollout_workers, args=(stop, killed), daemon=True)
    try:
        killer.start()
        t0 = time.perf_counter()
        with pytest.raises(RolloutError) as e:
            pool.play(specs)
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        killer.join(5)
        pool.close()
    msg = str(e.value)
    print(f"\nFIGURE kills>max_retries: RolloutError after {elapsed:.1f}s, {len(set(killed))} processes killed: {msg}")
    assert "micro-batch" in msg and "of step 0" in msg and "rollout.max_retries=1" in msg and "failed 2 times" in msg
    assert "process died" in msg
    assert elapsed < 120


def test_worker_crashing_inside_an_episode_is_retried_and_identical(setup, tmp_path):
    import relenvs  # noqa: F401  (registers reliability/* in the driver too)

    cfg, policy, spec, specs = setup
    marker = tmp_path / "crashed"
    spec.env_kwargs["marker"] = str(marker)
    try:
        flaky = with_env(specs, "relenvs:reliability/FlakyCalc-v0")
        marker.write_text("pre-existing: no crash\n")
        pool = _pool(setup, max_retries=2)
        want = digests(pool.play(flaky))
        marker.unlink()
        got = pool.play(flaky)
        assert marker.exists()  # the crash did happen
        assert digests(got) == want
        print(f"\nFIGURE worker-raises-once: retried, step identical, actor restarts {pool.restarts}")
        pool.close()
    finally:
        spec.env_kwargs.pop("marker")


def test_hung_worker_is_killed_after_the_timeout_and_the_step_is_identical(setup, tmp_path):
    """A worker that hangs (alive, no result) is treated as dead after rollout.micro_batch_timeout_s."""
    import relenvs  # noqa: F401  (registers reliability/* in the driver too)

    cfg, policy, spec, specs = setup
    marker = tmp_path / "hung"
    spec.env_kwargs["marker"] = str(marker)
    try:
        hanging = with_env(specs, "relenvs:reliability/HangOnceCalc-v0")
        marker.write_text("pre-existing: no hang\n")
        pool = _pool(setup, max_retries=2, micro_batch_timeout_s=5.0)
        want = digests(pool.play(hanging))
        marker.unlink()
        t0 = time.perf_counter()
        got = pool.play(hanging)
        took = time.perf_counter() - t0
        assert marker.exists() and pool.restarts == 1  # it did hang, and its actor was replaced
        assert digests(got) == want
        print(
            f"\nFIGURE hung-worker: killed after the 5 s timeout, step identical in {took:.1f} s, restarts "
            f"{pool.restarts}"
        )
        pool.close()
    finally:
        spec.env_kwargs.pop("marker")



def test_a_replacement_slower_to_load_than_the_timeout_is_not_taken_for_hung(setup, tmp_path):
    """The micro-batch timeout counts from when a fresh actor is ready, not from dispatch: a replacement that
    takes longer than rollout.micro_batch_timeout_s to load (a large model) would otherwise be killed as hung,
    again and again, until the step fails."""
    import dataclasses

    import relenvs

    cfg, policy, spec, specs = setup
    marker = tmp_path / "hung"
    slow_spec = dataclasses.replace(spec, env_kwargs={**spec.env_kwargs, "marker": str(marker)},
                                    backend="relenvs:slow_start_hf")
    hanging = with_env(specs, "relenvs:reliability/HangOnceCalc-v0")
    marker.write_text("pre-existing: no hang\n")
    # one worker: the replacement itself must play the hung micro-batch
    rc = dataclasses.replace(cfg.rollout, workers=1, max_retries=2, micro_batch_timeout_s=5.0)
    pool = RolloutPool(slow_spec, rc)
    try:
        pool.set_weights(0, weights_of(policy))
        want = digests(pool.play(hanging))
        marker.unlink()
        Path(str(marker) + ".slow").write_text("replacements load slowly\n")
        t0 = time.perf_counter()
        got = pool.play(hanging)
        took = time.perf_counter() - t0
        assert marker.exists() and pool.restarts == 1, pool.restarts  # one hang, one replacement, kept
        assert digests(got) == want
        assert took > relenvs.SLOW_START_S  # the replacement did load slowly
    finally:
        pool.close()

def test_worker_crashing_every_time_names_the_micro_batch_and_the_exception(setup):
    _, _, _, specs = setup
    pool = _pool(setup, max_retries=2)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RolloutError) as e:
            pool.play(with_env(specs, "relenvs:reliability/BrokenCalc-v0"))
        elapsed = time.perf_counter() - t0
    finally:
        pool.close()
    msg = str(e.value)
    print(f"\nFIGURE worker-raises-always: RolloutError after {elapsed:.2f}s: {msg}")
    assert "micro-batch" in msg and "failed 3 times" in msg and "rollout.max_retries=2" in msg
    assert "WorkerCrash: injected crash inside an episode" in msg  # the worker's exception, not Ray's task header
