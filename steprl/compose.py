"""How config layers combine: defaults <- `base:` preset <- file <- `key=value` overrides.

Sections merge key by key, except the mappings in REPLACED (`env.kwargs`): a later layer that gives
one replaces it whole, so `env.kwargs={}` clears the preset's. When a later layer changes `env.id`
without giving `env.kwargs`, the kwargs the new env does not accept are dropped (named in one log
line), so `steprl train smoke env.id=mymodule:MyEnv-v0` works with the preset's other settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

REPLACED = ("env.kwargs",)
"""Dotted keys of mappings a later layer replaces instead of merging into."""

Merge = Callable[[DictConfig, dict[str, Any], str], DictConfig]


def nested(key: str, value: Any) -> dict[str, Any]:
    """`a.b.c`, v -> {"a": {"b": {"c": v}}}."""
    out: dict[str, Any] = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur[p] = cur = {}
    cur[parts[-1]] = value
    return out


def _pop(data: dict[str, Any], key: str) -> tuple[bool, Any]:
    """Remove dotted `key` from a nested mapping (in place); (found, value)."""
    *path, last = key.split(".")
    cur: Any = data
    for p in path:
        cur = cur.get(p) if isinstance(cur, dict) else None
    if isinstance(cur, dict) and last in cur:
        return True, cur.pop(last)
    return False, None


def gives(data: dict[str, Any], key: str) -> bool:
    """Whether a nested mapping sets dotted `key` (or something under it)."""
    cur: Any = data
    for p in key.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return False
        cur = cur[p]
    return True


def is_inside_replaced(key: str) -> bool:
    """Whether an override key names one entry of a REPLACED mapping (`env.kwargs.digits`): it merges."""
    return any(key.startswith(r + ".") for r in REPLACED)


def apply_layer(cfg: DictConfig, data: dict[str, Any], where: str, merge: Merge, replace: bool = True) -> DictConfig:
    """Merge one layer into `cfg`; with `replace`, the REPLACED mappings it gives replace the earlier ones."""
    data = OmegaConf.to_container(OmegaConf.create(data)) if data else {}  # a copy we may pop from
    replaced = {}
    for key in REPLACED if replace else ():
        found, value = _pop(data, key)
        if found:
            replaced[key] = value
    cfg = merge(cfg, data, where)
    for key, value in replaced.items():
        if isinstance(value, dict):
            OmegaConf.update(cfg, key, {}, merge=False)
        cfg = merge(cfg, nested(key, value), where)
    return cfg


def fit_env_kwargs(env_id: str, kwargs: dict[str, Any], later: list[tuple[dict[str, Any], str, bool]]) -> dict:
    """After `env.id` changed: `kwargs` without the earlier keys env `env_id` does not accept (logged once).

    Keys the later layers gave themselves are kept (a mistake there is the user's to see); nothing is
    dropped when a later layer replaced `env.kwargs` whole, or when the accepted keys are unknown.
    """
    from steprl.envs.registry import accepted_kwargs  # local: registering envs imports gymnasium

    if any(replace and gives(d, "env.kwargs") for d, _, replace in later):
        return dict(kwargs)
    given = {k for d, _, _ in later if gives(d, "env.kwargs") for k in d["env"]["kwargs"]}
    accepted = accepted_kwargs(env_id)
    if accepted is None:
        return dict(kwargs)
    accepted |= given
    dropped = sorted(k for k in kwargs if k not in accepted)
    if dropped:
        log.info("env.id=%s: dropped earlier env.kwargs it does not accept: %s (give env.kwargs to set them)",
                 env_id, ", ".join(dropped))
    return {k: v for k, v in kwargs.items() if k in accepted}
