"""Which env ids exist: everything registered with Gymnasium once steprl's own envs are registered."""

from __future__ import annotations

import gymnasium as gym


def known_env_ids() -> list[str]:
    """Sorted ids of every registered Gymnasium env (steprl's own under `steprl/`)."""
    import steprl.envs  # noqa: F401  (registers steprl/* ids)

    return sorted(gym.registry.keys())


def steprl_env_ids() -> list[str]:
    """Sorted ids registered by steprl itself."""
    return [i for i in known_env_ids() if i.startswith("steprl/")]
