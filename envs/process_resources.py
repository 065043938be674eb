"""Connections and child processes an env opens once per process and shares between its env instances.

A rollout worker plays a micro-batch on several env instances at once; each would otherwise start its own OpenEnv
server or MCP server. `ProcessResources` keeps one per key (what it serves, as JSON) for this process, like the
process's open files: it is never part of a run's data or state, and everything in it is closed at exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Resource(Protocol):
    """What a shared resource offers: whether it still works, and how to release it."""

    def alive(self) -> bool:
        """False once it died (a replacement is made on next use)."""

    def close(self) -> None:
        """Release it (terminate a child, close a connection)."""


def resource_key(*parts: Any) -> str:
    """A stable key for what a resource serves (JSON of its parts, keys sorted)."""
    return json.dumps(parts, sort_keys=True, default=str)


class ProcessResources:
    """One live resource per key in this process, made on first use, remade when it died, all closed at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, Resource] = {}
        atexit.register(self.close_all)

    def get(self, key: str, make: Callable[[], Resource]) -> Any:
        """The live resource for `key`, made with `make()` when there is none."""
        with self._lock:
            held = self._held.get(key)
            if held is not None and held.alive():
                return held
            if held is not None:
                log.warning("a shared env resource died; starting it again (%s)", key[:120])
                held.close()
            self._held[key] = made = make()
            return made

    def close_all(self) -> None:
        """Close every resource (at exit, or in tests)."""
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for r in held:
            try:
                r.close()
            except Exception as e:  # noqa: BLE001 - closing at exit must not stop the others from closing
                log.warning("closing %r failed: %s", r, e)


SHARED = ProcessResources()
"""This process's shared env resources (servers, connections): process plumbing, not data."""
