"""Which env ids exist: everything registered with Gymnasium once steprl's own envs are registered."""

from __future__ import annotations

from typing import Any

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


def _entry_point(env_id: str) -> Any:
    """The callable gym.make calls for `env_id` (a `module:` prefix is imported first)."""
    import importlib

    module, sep, name = env_id.rpartition(":")
    if sep:
        importlib.import_module(module)
    entry = gym.spec(name if sep else env_id).entry_point
    if isinstance(entry, str):
        mod, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(mod), attr)
    return entry


def accepted_kwargs(env_id: str) -> set[str] | None:
    """Keyword arguments `gym.make(env_id, ...)` accepts, or None when unknown or unbounded (`**kwargs` that go
    nowhere we can see). A class's `**kwargs` are followed up its bases' `__init__`s, as `super().__init__` would."""
    import inspect

    try:
        entry = _entry_point(env_id)
    except Exception:  # noqa: BLE001 - an unknown or unimportable id is reported by env_id_problem
        return None
    inits = [c.__dict__["__init__"] for c in entry.__mro__ if "__init__" in c.__dict__] if isinstance(entry, type) \
        else [entry]
    names: set[str] = set()
    for fn in inits:
        if fn is object.__init__:
            return names
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def pin_env_kwargs(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` with what the env pins for a new run (the entry point's `pin_kwargs`, e.g. steprl/QA-v0 adds its
    file's sha256), so the run's config.yaml records the data and resume/replay can refuse data that changed."""
    try:
        pin = getattr(_entry_point(env_id), "pin_kwargs", None)
    except Exception:  # noqa: BLE001 - an unknown or unimportable id is reported by env_id_problem
        return kwargs
    return dict(pin(dict(kwargs))) if callable(pin) else kwargs
