"""Tools: named, described, schema-checked callables whose failures are observations, never exceptions.

A tool function takes `(arguments, context)`: the call's arguments (already checked against
the schema) and the task's read-only context (a lookup table, a hidden number ...). It
returns the result text or raises `ToolError`. `run_tool` turns every outcome into a
`ToolResult`; tools flagged `untrusted` run in a child process killed from outside at
their time limit (`run_with_timeout`).

The one exception: a call past its wall-clock time limit raises `ToolTimeout`. Whether a call
finishes in time depends on the machine's load, not on (config, seed, step), so a timeout is a
fault of the run (the micro-batch is retried), never text the model reads.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from steprl.envs.arithmetic import CalcError, calc
from steprl.envs.text import fit

log = logging.getLogger(__name__)

ToolFn = Callable[[Mapping[str, Any], Mapping[str, Any]], str]


class ToolError(Exception):
    """Raised by a tool function for a failure the agent should read (bad argument, missing key)."""


class ToolTimeout(Exception):
    """A tool call ran past its wall-clock time limit: a fault (load-dependent), not an observation.

    Not a ToolError, so nothing turns it into text for the agent; rollout retries the micro-batch.
    """


@dataclass(frozen=True)
class Tool:
    """A named tool: `schema` is a JSON-schema object (`properties`, `required`) for its arguments.

    `usage` is a short argument placeholder for the compact format (`calc EXPR`).
    """

    name: str
    description: str
    schema: Mapping[str, Any]
    fn: ToolFn
    time_limit_s: float = 1.0
    max_output_chars: int = 400
    untrusted: bool = False
    usage: str = "ARG"

    @property
    def params(self) -> tuple[str, ...]:
        """Argument names in schema order."""
        return tuple(self.schema.get("properties", {}))

    def spec(self) -> dict[str, Any]:
        """The tool as a JSON-able function description (Hermes / OpenAI style)."""
        return {"name": self.name, "description": self.description, "parameters": dict(self.schema)}


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call: text for the agent (already ASCII and length-capped) and whether it failed."""

    text: str
    error: bool
    elapsed_s: float = 0.0


_TOOLS: dict[str, Tool] = {}


def register_tool(tool: Tool, *, replace: bool = False) -> Tool:
    """Add `tool` to the registry by name (a second registration of the same name needs `replace`)."""
    if tool.name in _TOOLS and not replace and _TOOLS[tool.name] != tool:
        raise ValueError(f"tool {tool.name!r} already registered")
    _TOOLS[tool.name] = tool
    return tool


def get_tool(name: str) -> Tool | None:
    """The registered tool called `name`, or None."""
    return _TOOLS.get(name)


def tool_names() -> list[str]:
    """Sorted names of all registered tools."""
    return sorted(_TOOLS)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def check_arguments(tool: Tool, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `arguments` against the tool's schema; return them or raise ToolError.

    An `integer` parameter also accepts a string of digits (the compact format passes raw text).
    """
    if not isinstance(arguments, Mapping):
        raise ToolError("arguments must be an object")
    props = tool.schema.get("properties", {})
    unknown = [k for k in arguments if k not in props]
    if unknown:
        raise ToolError(f"unknown argument {str(unknown[0])[:40]!r} for {tool.name}")
    missing = [k for k in tool.schema.get("required", ()) if k not in arguments]
    if missing:
        raise ToolError(f"missing argument {missing[0]!r} for {tool.name}")
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        kind = props[key].get("type", "string")
        if kind == "integer" and isinstance(value, str):
            s = value.strip()
            if not (s.lstrip("-").isdigit() and s.isascii() and len(s) <= 40):
                raise ToolError(f"argument {key!r} must be an integer")
            value = int(s)
        if kind in ("integer", "number") and isinstance(value, bool):
            raise ToolError(f"argument {key!r} must be {kind}")
        if not isinstance(value, _JSON_TYPES.get(kind, (object,))):
            raise ToolError(f"argument {key!r} must be {kind}")
        out[key] = value
    return out


def _child(fn: Callable[..., Any], args: tuple, conn: Any, mem_bytes: int, cpu_s: int) -> None:
    """Child-process body of run_with_timeout: set resource limits, call, send ("ok"|"err", text)."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    except (ImportError, ValueError, OSError):  # pragma: no cover - platform without rlimits
        pass
    try:
        conn.send(("ok", str(fn(*args))))
    except BaseException as exc:  # noqa: BLE001 - everything becomes an error message
        conn.send(("err", f"{type(exc).__name__}: {exc}"[:300]))
    finally:
        conn.close()


def run_with_timeout(
    fn: Callable[..., Any],
    args: tuple = (),
    time_limit_s: float = 1.0,
    mem_bytes: int = 1 << 30,
) -> tuple[bool, str]:
    """Run picklable `fn(*args)` in a fresh (spawned) process killed from outside after `time_limit_s`.

    Returns `(ok, text)`: `(True, str(result))`, or `(False, message)` when it raised, was
    killed at the time limit, or died (e.g. hit the memory limit `mem_bytes`). Never raises
    for the callee's behaviour, never waits much past the limit.
    """
    status, text = _run_child(fn, args, time_limit_s, mem_bytes)
    return status == "ok", text


def _run_child(fn: Callable[..., Any], args: tuple, time_limit_s: float, mem_bytes: int) -> tuple[str, str]:
    """`run_with_timeout` with the outcome named: ("ok" | "err" | "timeout", text)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child,
        args=(fn, args, child, mem_bytes, max(1, int(time_limit_s) + 1)),
        daemon=True,
    )
    deadline = time.monotonic() + time_limit_s
    try:
        proc.start()
    except Exception as exc:  # noqa: BLE001 - e.g. fn not picklable
        return "err", f"could not start tool: {type(exc).__name__}"
    child.close()
    try:
        remaining = deadline - time.monotonic()
        if remaining > 0 and parent.poll(remaining):
            try:
                return parent.recv()
            except (EOFError, OSError):
                return "err", "tool process died"
        return "timeout", f"time limit exceeded ({time_limit_s:g} s)"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(0.5)
        parent.close()


def run_tool(tool: Tool, arguments: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> ToolResult:
    """Check arguments, call the tool (in a killed-at-limit child process when untrusted), cap the output.

    Every failure of the call itself (bad arguments, ToolError, any exception) is an error result.
    Running past `tool.time_limit_s` raises `ToolTimeout` instead: a load-dependent outcome must not
    become an observation (a retry or a replay could see something else).
    """
    ctx = MappingProxyType(dict(context or {}))
    start = time.monotonic()
    try:
        args = check_arguments(tool, arguments)
        if tool.untrusted:
            status, text = _run_child(tool.fn, (args, dict(ctx)), tool.time_limit_s, 1 << 30)
            if status == "timeout":
                raise ToolTimeout(f"tool {tool.name}: {text}")
            if status != "ok":
                raise ToolError(text)
        else:
            text = str(tool.fn(args, ctx))
            if time.monotonic() - start > tool.time_limit_s:
                raise ToolTimeout(f"tool {tool.name}: time limit exceeded ({tool.time_limit_s:g} s)")
        return ToolResult(fit(text, tool.max_output_chars), False, time.monotonic() - start)
    except ToolTimeout:
        raise
    except (ToolError, CalcError) as exc:
        msg = f"error: {exc}"
    except Exception as exc:  # noqa: BLE001 - a tool's bug is the agent's observation, logged for us
        log.warning("tool %s raised %s", tool.name, type(exc).__name__)
        msg = f"error: {type(exc).__name__}"
    return ToolResult(fit(msg, tool.max_output_chars), True, time.monotonic() - start)


# ---------------------------------------------------------------- built-in tools


def _calc_fn(args: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    return calc(args["expression"])


def _lookup_fn(args: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    table = ctx.get("table", {})
    key = str(args["key"]).strip()
    if key not in table:
        raise ToolError(f"no such key: {key[:40]}")
    return str(table[key])


def _guess_fn(args: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    if "secret" not in ctx:
        raise ToolError("nothing to guess in this task")
    n, secret = int(args["number"]), int(ctx["secret"])
    return "correct" if n == secret else ("higher" if secret > n else "lower")


CALC = register_tool(
    Tool(
        name="calc",
        description="Exact arithmetic on integers: + - * / // % ** and parentheses.",
        schema={
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. 12*(7+5)"}},
            "required": ["expression"],
        },
        fn=_calc_fn,
        usage="EXPR",
    )
)
LOOKUP = register_tool(
    Tool(
        name="lookup",
        description="Look up the value stored under a key in the task's table.",
        schema={
            "type": "object",
            "properties": {"key": {"type": "string", "description": "e.g. name.field"}},
            "required": ["key"],
        },
        fn=_lookup_fn,
        usage="KEY",
    )
)
GUESS = register_tool(
    Tool(
        name="guess",
        description="Guess the hidden number; replies higher, lower or correct.",
        schema={
            "type": "object",
            "properties": {"number": {"type": "integer"}},
            "required": ["number"],
        },
        fn=_guess_fn,
        usage="N",
    )
)
