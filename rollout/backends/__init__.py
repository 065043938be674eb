"""Generation backends by name: `rollout.backend` picks how a worker generates turns.

A name is either a registered backend (`hf`, the default) or a `module:attr` import path to a
user's factory: a class or function called with the `WorkerSpec` that returns a
`TurnGenerator` (rollout/backends/base.py). Only the name travels (it is picklable); each
worker, inline or a Ray actor, imports and builds its generator itself. Registry entries are
import paths too, so naming a backend never imports torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from steprl.rollout.backends.base import BackendFactory, TurnGenerator, TurnResult

__all__ = ["BACKENDS", "BackendFactory", "TurnGenerator", "TurnResult", "backend_problem", "make_generator", "resolve"]

BACKENDS: dict[str, str] = {
    "hf": "steprl.rollout.backends.hf:HFGenerator",
}
"""Registered backend names -> `module:attr` of their factory."""


def backend_problem(name: str) -> str | None:
    """Why `name` names no backend (a sentence listing the known names), or None when it resolves."""
    if name in BACKENDS:
        return None
    known = ", ".join(repr(k) for k in sorted(BACKENDS))
    if ":" not in name:
        return f"unknown generation backend {name!r}; known: {known}, or a 'module:attr' import path"
    try:
        resolve(name)
    except (ImportError, AttributeError, ValueError) as e:
        return f"cannot load generation backend {name!r} ({type(e).__name__}: {e}); known: {known}"
    return None


def resolve(name: str) -> BackendFactory:
    """The factory a backend name stands for (imports its module); ValueError for a malformed name."""
    path = BACKENDS.get(name, name)
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        known = ", ".join(repr(k) for k in sorted(BACKENDS))
        raise ValueError(f"rollout.backend: unknown generation backend {name!r}; known: {known}, or 'module:attr'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"rollout.backend: {path!r} is not callable (expected a class or factory function)")
    return obj


def make_generator(spec: Any) -> TurnGenerator:
    """Build the generator `spec.backend` names, for this worker (called inside the worker process)."""
    problem = backend_problem(spec.backend)
    if problem:
        raise ValueError(f"rollout.backend: {problem}")
    return resolve(spec.backend)(spec)
