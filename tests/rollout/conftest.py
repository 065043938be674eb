"""Rollout test fixtures: a tiny deterministic policy (sampler tests), and tests/rollout on sys.path so
`replay_backend:ReplayGenerator` names the test-only generation backend."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from steprl.agents.config import ModelConfig, TokenizerConfig
from steprl.agents.policy import build_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))

TINY = dict(layers=2, hidden=64, heads=2, kv_heads=1, intermediate=128, max_positions=512)


@pytest.fixture(scope="session")
def policy():
    """2-layer Llama, hidden 64, char vocabulary, seed 0."""
    return build_policy(ModelConfig(**TINY), TokenizerConfig(), seed=0)
