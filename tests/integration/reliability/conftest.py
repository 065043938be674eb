"""Shared fixtures of the reliability suite: smoke configs, a CLI runner, one Ray session per module."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # relhelp.py, relenvs.py
sys.path.insert(0, str(HERE.parent / "pipeline"))  # digests.py


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread and deterministic kernels for in-process training (the box has 2 busy cores)."""
    prev, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
    torch.use_deterministic_algorithms(det)


@pytest.fixture
def smoke(tmp_path):
    """A function building the smoke config under tmp_path with extra overrides (one training thread)."""
    from steprl.config import load_config

    def make(*overrides, name="t", root=None):
        return load_config("smoke", [f"run.root={root or tmp_path}", f"run.name={name}", "run.threads=1", *overrides])

    return make


@pytest.fixture(scope="module")
def ray_session():
    """One embedded Ray session for the whole module; workers can import relenvs (PYTHONPATH)."""
    import ray

    from steprl.rollout.ray_setup import init_ray

    prev = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE)] + ([prev] if prev else []))
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    init_ray(None, 2)
    yield ray
    ray.shutdown()
    if prev is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = prev
