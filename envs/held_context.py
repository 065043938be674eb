"""An async context manager held open on its own event-loop thread, so sync env code can call into it.

The MCP client session (`envs/mcp_tools.py`) and verifiers' serving context (`envs/verifiers_env.py`) are async
context managers that anyio/asyncio require to be entered and left in one task, while steprl's envs step from
plain threads. `HeldContext` enters the context in one task of a daemon-thread loop, keeps it open until `close`,
and lets the caller submit coroutines to that loop meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractAsyncContextManager
from typing import Any

log = logging.getLogger(__name__)


class HeldContext:
    """`context()` entered on a background loop and held open; `value` is what `on_enter(entered)` returned.

    The constructor waits `timeout_s` for the context to open (concurrent.futures.TimeoutError past it, or the
    exception entering raised); `ended` turns true once the context is left for any reason (its connection died,
    or `close`).
    """

    def __init__(self, name: str, context: Callable[[], AbstractAsyncContextManager],
                 on_enter: Callable[[Any], Awaitable[Any]] | None = None, timeout_s: float = 60.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=name)
        self._thread.start()
        self._stop: asyncio.Event | None = None
        self._holder: asyncio.Task | None = None
        self._ended = False
        try:
            self.value = self.run(self._open(context, on_enter), timeout_s)
        except BaseException:
            self.close()
            raise

    async def _open(self, context: Callable[[], AbstractAsyncContextManager],
                    on_enter: Callable[[Any], Awaitable[Any]] | None) -> Any:
        opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()

        async def hold() -> None:  # entered and left in this one task
            try:
                async with context() as entered:
                    opened.set_result(await on_enter(entered) if on_enter is not None else entered)
                    await self._stop.wait()
            except BaseException as exc:  # noqa: BLE001 - reported to whoever waits for the opening
                if not opened.done():
                    opened.set_exception(exc)
            finally:
                self._ended = True

        self._holder = asyncio.ensure_future(hold())
        return await opened

    @property
    def ended(self) -> bool:
        """Whether the context has been left (it died, or was closed)."""
        return self._ended

    def submit(self, coro: Awaitable[Any]) -> Future:
        """Run `coro` on the held loop; a concurrent Future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Awaitable[Any], timeout_s: float) -> Any:
        """`coro`'s result, waited for `timeout_s` (cancelled and concurrent.futures.TimeoutError past it)."""
        fut = self.submit(coro)
        try:
            return fut.result(timeout_s)
        except FutureTimeout:
            fut.cancel()
            raise

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Call `fn` on the held loop (thread-safe)."""
        self._loop.call_soon_threadsafe(fn)

    def close(self, before: Callable[[], Awaitable[None]] | None = None, timeout_s: float = 10.0) -> None:
        """Await `before()` on the loop, leave the context, stop the loop and its thread."""
        if self._loop.is_running():
            async def shut_down() -> None:
                if before is not None:
                    await before()
                if self._stop is not None:
                    self._stop.set()
                if self._holder is not None:
                    await asyncio.wait([self._holder], timeout=timeout_s)

            try:
                self.run(shut_down(), 2 * timeout_s + 5)
            except Exception:  # noqa: BLE001 - what will not close in time is abandoned with the daemon thread
                log.warning("%s did not shut down in time; abandoned", self._thread.name)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(2)
        self._ended = True
