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


def env_id_problem(env_id: str) -> str | None:
    """None when `env_id` can be made, else why not. Accepts Gymnasium's `module:Env-v0` form for
    custom envs (the module is imported, as gym.make would, so it can register its ids)."""
    import difflib
    import importlib

    module, sep, name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as e:
            return f"cannot import module {module!r} of env id {env_id!r} ({e}); is it on PYTHONPATH?"
        if name not in gym.registry:
            return f"module {module!r} registers no env {name!r}"
        return None
    ids = known_env_ids()
    if env_id in ids:
        return None
    match = difflib.get_close_matches(env_id, ids, n=1)
    return f"unknown env {env_id!r}" + (f" (did you mean '{match[0]}'?)" if match else " (see `steprl envs`)")
