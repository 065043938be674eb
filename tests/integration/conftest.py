"""Every integration module leaves no Ray session behind: tests that start Ray in this process (the pool's
actors, learner ranks) would otherwise hand it to the next module, whose checks (e.g. "a config error
starts nothing") then see a Ray they did not start."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _no_ray_left_behind():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
