"""A run asking Ray for more CPUs than its cluster has is refused at preflight, naming the keys to change,
before its run directory exists (review finding 16: it used to warm up, then wait 120 s for a placement
group that could never be placed)."""

from __future__ import annotations

import pytest

import steprl.pipeline
from steprl.cli import main
from steprl.config import load_config
from steprl.errors import ConfigError
from steprl.rollout import ray_setup
from steprl.run.loop.preflight import check_run

KEYS = ("rollout.workers", "rollout.num_cpus_per_worker", "learner.cpus_per_rank")


class RunStarted(Exception):
    """Raised where the run directory is created: the config got past preflight."""


@pytest.fixture
def no_run_starts(monkeypatch):
    real = steprl.pipeline.create_run_dir

    def create_then_stop(cfg):
        real(cfg)
        raise RunStarted(cfg.run.name)

    monkeypatch.setattr(steprl.pipeline, "create_run_dir", create_then_stop)


def _train_refused(tmp_path, capsys, *overrides) -> str:
    assert main(["train", "smoke", f"run.root={tmp_path / 'runs'}", *overrides]) == 2
    assert not (tmp_path / "runs" / "smoke").exists()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_readme_scale_out_example_on_a_two_core_machine_is_refused_at_once(tmp_path, capsys, monkeypatch,
                                                                                  no_run_starts):
    """2 rollout workers x 1 CPU + 2 learner ranks x 1 CPU = 4 CPUs on a 2-CPU machine (the CPU count patched,
    so the test holds on any machine)."""
    monkeypatch.setattr(ray_setup, "local_cpus", lambda num_cpus: 2.0 if num_cpus is None else float(num_cpus),
                        raising=False)
    err = _train_refused(tmp_path, capsys, "rollout.executor=ray", "rollout.workers=2", "learner.world_size=2",
                         "learner.cpus_per_rank=1")
    for key in KEYS:
        assert key in err, err
    assert "4 CPUs" in err and "2" in err, err


def test_ray_num_cpus_bounds_the_embedded_cluster(tmp_path, capsys, no_run_starts):
    """ray.num_cpus=1 (any machine): one rollout worker of 1 CPU fits, a second does not."""
    err = _train_refused(tmp_path, capsys, "rollout.executor=ray", "rollout.workers=2", "ray.num_cpus=1")
    assert "ray.num_cpus" in err and "rollout.workers" in err, err
    fits = load_config("smoke", ["rollout.executor=ray", "rollout.workers=1", "ray.num_cpus=1"])
    check_run(fits)  # no error: exactly the CPUs it has


def test_fractional_requests_that_fit_pass(monkeypatch):
    """What the README now suggests on 2 cores: 1 worker x 1 CPU + 2 ranks x 0.5 CPU = 2 CPUs."""
    from steprl.run.learning.topology import ray_cpu_demand

    monkeypatch.setattr(ray_setup, "local_cpus", lambda num_cpus: 2.0)
    cfg = load_config("quickstart", ["learner.world_size=2", "rollout.workers=1", "learner.cpus_per_rank=0.5"])
    assert sum(n for _, n in ray_cpu_demand(cfg)) == 2.0
    check_run(cfg)
    # no Ray at all (inline rollouts, one learner rank): nothing to ask for, nothing checked
    assert ray_cpu_demand(load_config("smoke")) == []


def test_an_existing_ray_cluster_is_asked_for_its_cpus(tmp_path):
    """A Ray already running (here: started in this process with 1 CPU, as `ray.address` joins one) is asked
    for its resources rather than the machine's CPU count."""
    import ray

    ray_setup.init_ray(num_cpus=1)
    try:
        assert ray_setup.cluster_cpus(None, None)[0] == 1.0
        cfg = load_config("smoke", ["learner.world_size=2", "learner.cpus_per_rank=1", f"run.root={tmp_path}"])
        with pytest.raises(ConfigError) as e:
            check_run(cfg)
        assert "learner.cpus_per_rank" in str(e.value) and "1 CPU" in str(e.value)
    finally:
        ray.shutdown()
