"""What an `env: module:attr` kwarg names for OpenEnv: the installed library, the object, its Action and Observation.

Shared by the env (`envs/openenv_env.py`) and the local server child (`envs/openenv_server.py`).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any

INSTALL_HINT = "OpenEnv is not installed; install the optional extra with: pip install 'steprl[openenv]'"


def import_openenv() -> Any:
    """The `openenv.core` module, or ImportError naming the extra to install."""
    try:
        return importlib.import_module("openenv.core")
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


def load_attr(spec: str, what: str) -> Any:
    """The object `module:attr` names; ValueError naming `what` and the spec when it cannot be imported."""
    module, sep, attr = str(spec).partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{what} {spec!r}: expected module:attribute (e.g. my_game:GuessEnvironment)")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"{what} {spec!r}: cannot import {module!r} ({exc}); is its folder on PYTHONPATH?") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {spec!r}: module {module!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def environment_types(factory: Any) -> tuple[Any, Any]:
    """(Action class, Observation class) of an `Environment[Act, Obs, State]` subclass, from its generic bases."""
    for cls in inspect.getmro(factory) if isinstance(factory, type) else ():
        for base in getattr(cls, "__orig_bases__", ()):
            args = typing.get_args(base)
            if len(args) >= 2 and all(isinstance(a, type) for a in args[:2]):
                return args[0], args[1]
    return None, None
