"""Tools served over MCP: an entry of `env.kwargs.tools` may name an MCP server instead of a registered tool.

    env:
      id: steprl/QA-v0
      kwargs: {path: qa.jsonl, tools: [calc, "mcp:python units_server.py"]}

`mcp:COMMAND ARGS...` launches the server as a child and talks over its stdin/stdout; `mcp:http://host:port/mcp`
joins a Streamable HTTP server. The mapping form `{mcp: ..., time_limit_s: 10, prefix: "units."}` sets the calls'
time limit and a prefix for the tools' names (needed when a name is taken, e.g. by `calc`). Everything goes through
the `mcp` package's own `Client` (`pip install 'steprl[mcp]'`).

Each of the server's tools (`tools/list`, read once when the env is built) becomes a steprl `Tool` under its name:
its description and input schema are shown to the agent as those of steprl's own tools are, and every call is
checked against that schema (steprl's checks, then the whole JSON schema with jsonschema) before it reaches the
server. A result the server marks as an error is an error observation, like any tool's. A call past its time limit,
or a server that died or dropped the connection, raises `ToolTimeout`: a fault of the run, so the micro-batch is
played again (the server is started again if it died), never text the model reads.

One connection per process and server is shared by all env instances (`envs/process_resources.py`), held open on a
background event-loop thread (`envs/held_context.py`) so the sync env code can call the async client.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from steprl.envs.held_context import HeldContext
from steprl.envs.process_resources import SHARED, resource_key
from steprl.envs.tools import Tool, ToolError, ToolTimeout, get_tool, register_tool

log = logging.getLogger(__name__)
PREFIX = "mcp:"
INSTALL_HINT = "MCP tools need the mcp client; install the optional extra with: pip install 'steprl[mcp]'"
CONNECT_TIMEOUT_S = 60.0
TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
"""Names the tool-call formats parse (envs/protocol.py)."""


@dataclass(frozen=True)
class McpServerSpec:
    """Where an MCP server is (a command line to launch, or a URL) and how its tools are offered."""

    target: str
    time_limit_s: float = 10.0
    prefix: str = ""

    @property
    def is_url(self) -> bool:
        """Streamable HTTP (a URL) rather than a stdio command."""
        return self.target.startswith(("http://", "https://"))


def is_mcp_entry(entry: Any) -> bool:
    """Whether a `tools` entry names an MCP server (`mcp:...` or a mapping with `mcp`)."""
    return (isinstance(entry, str) and entry.startswith(PREFIX)) or (isinstance(entry, Mapping) and "mcp" in entry)


def parse_entry(entry: Any) -> McpServerSpec:
    """The server a `tools` entry names; ValueError saying what was expected."""
    if isinstance(entry, str):
        fields: dict[str, Any] = {"mcp": entry[len(PREFIX):]}
    else:
        fields = dict(entry)
    unknown = sorted(set(fields) - {"mcp", "time_limit_s", "prefix"})
    if unknown:
        raise ValueError(f"MCP tools entry {entry!r}: unknown key {unknown[0]!r} (expected mcp, time_limit_s, prefix)")
    target = str(fields["mcp"]).strip()
    if not target:
        raise ValueError(f"MCP tools entry {entry!r}: name a server, e.g. 'mcp:python server.py' or "
                         "'mcp:http://127.0.0.1:8000/mcp'")
    try:
        limit = float(fields.get("time_limit_s", 10.0))
    except (TypeError, ValueError):
        limit = -1.0
    if not limit > 0:
        raise ValueError(f"MCP tools entry {entry!r}: time_limit_s must be a number > 0")
    return McpServerSpec(target, limit, str(fields.get("prefix", "")))


def _client_module() -> Any:
    try:
        return importlib.import_module("mcp")
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


class McpConnection:
    """One open MCP client session, held on its own event-loop thread (`HeldContext`)."""

    def __init__(self, spec: McpServerSpec) -> None:
        self.spec = spec
        self._broken = False
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - the server's stderr, closed with the connection
        mcp = _client_module()

        async def listed(client: Any) -> tuple[Any, list[Any]]:
            return client, list((await client.list_tools()).tools)

        try:
            self._held = HeldContext("steprl-mcp", lambda: mcp.Client(self._transport(), cache=None), listed,
                                     CONNECT_TIMEOUT_S)
        except FutureTimeout:
            self._devnull.close()
            raise ValueError(f"MCP server {spec.target!r} did not answer within {CONNECT_TIMEOUT_S:g} s") from None
        except Exception as exc:  # noqa: BLE001 - not found, refused, not MCP: say which server
            self._devnull.close()
            raise ValueError(f"MCP server {spec.target!r} cannot be reached: {type(exc).__name__}: {exc}") from None
        self._client, self.tools = self._held.value

    def _transport(self) -> Any:
        if self.spec.is_url:
            return self.spec.target
        from mcp.client.stdio import StdioServerParameters, stdio_client

        argv = shlex.split(self.spec.target)
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
        return stdio_client(params, errlog=self._devnull)

    def alive(self) -> bool:
        """False once the session ended (server died, connection dropped)."""
        return not (self._broken or self._held.ended)

    def call(self, name: str, arguments: Mapping[str, Any], time_limit_s: float) -> tuple[str, bool]:
        """(text, is_error) of one tool call; ToolTimeout past the limit or when the connection is gone."""
        if not self.alive():
            raise ToolTimeout(f"MCP server {self.spec.target!r} is gone")
        try:
            result = self._held.run(self._client.call_tool(name, dict(arguments)), time_limit_s)
        except FutureTimeout:
            raise ToolTimeout(f"MCP tool {name}: time limit exceeded ({time_limit_s:g} s)") from None
        except Exception as exc:  # noqa: BLE001 - transport failure: the run's fault, retried on a new connection
            self._broken = True
            raise ToolTimeout(f"MCP server {self.spec.target!r} failed on {name}: {type(exc).__name__}: {exc}") \
                from None
        return result_text(result), bool(getattr(result, "is_error", False))

    def close(self) -> None:
        """End the session (stops a stdio server) and its loop thread."""
        self._held.close(timeout_s=5)
        self._devnull.close()
        self._broken = True


def result_text(result: Any) -> str:
    """The text of a CallToolResult: its text parts joined (other content named by type)."""
    parts = []
    for item in getattr(result, "content", None) or ():
        text = getattr(item, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(item, 'type', 'content')}]")
    if not parts and getattr(result, "structured_content", None) is not None:
        import json

        return json.dumps(result.structured_content, sort_keys=True)
    return "\n".join(parts)


def connection(spec: McpServerSpec) -> McpConnection:
    """This process's live connection to `spec`'s server (opened, or opened again after it died)."""
    return SHARED.get(resource_key("mcp", spec.target), lambda: McpConnection(spec))


class McpToolCall:
    """A registered MCP tool's function: check the arguments against the whole JSON schema, then call the server."""

    def __init__(self, spec: McpServerSpec, remote_name: str, schema: Mapping[str, Any]) -> None:
        import jsonschema

        self.spec, self.remote_name = spec, remote_name
        self.mcp_target = spec.target  # which server owns the tool's name
        self._validator = jsonschema.Draft202012Validator(dict(schema))

    def __call__(self, args: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
        """The call's result text; ToolError for a schema violation or an error result."""
        errors = sorted(self._validator.iter_errors(dict(args)), key=lambda e: [str(p) for p in e.path])
        if errors:
            where = ".".join(str(p) for p in errors[0].path) or "arguments"
            raise ToolError(f"{where}: {errors[0].message[:200]}")
        text, is_error = connection(self.spec).call(self.remote_name, args, self.spec.time_limit_s)
        if is_error:
            raise ToolError(text[:300])
        return text


def compact_usage(schema: Mapping[str, Any]) -> str:
    """The compact format's argument placeholder: the single argument's name, or a JSON object of placeholders."""
    props = list(schema.get("properties", {}))
    if len(props) == 1:
        return props[0].upper()
    return "{" + ", ".join(f'"{p}": {p.upper()}' for p in props) + "}"


def mcp_tools(entry: Any) -> list[str]:
    """Connect to the server an entry names, register each of its tools, return their (prefixed) names.

    All or nothing: a name no format can carry, or one another tool already has, is a ValueError before any is
    registered. The same server's tools are registered again as they are (another env instance, a reconnect)."""
    spec = parse_entry(entry)
    _client_module()  # ImportError naming the extra, before any server is launched
    conn = connection(spec)
    tools = []
    for t in conn.tools:
        name = spec.prefix + t.name
        if not TOOL_NAME.match(name):
            raise ValueError(f"MCP server {spec.target!r} offers a tool named {name!r}, which no tool-call format can "
                             "carry (letters, digits, _ . -, at most 64 characters)")
        existing = get_tool(name)
        if existing is not None and getattr(existing.fn, "mcp_target", None) != spec.target:
            raise ValueError(f"MCP server {spec.target!r} offers a tool {name!r}, a name already taken by another "
                             "tool; give the entry a prefix: {mcp: ..., prefix: 'srv.'}")
        schema = dict(t.input_schema or {"type": "object", "properties": {}})
        tools.append(Tool(name=name, description=str(t.description or "")[:500], schema=schema,
                          fn=McpToolCall(spec, t.name, schema), time_limit_s=spec.time_limit_s,
                          usage=compact_usage(schema)))
    for tool in tools:
        register_tool(tool, replace=True)
    return [t.name for t in tools]


def resolve_tools(entries: Sequence[Any]) -> tuple[str, ...]:
    """Tool names for a `tools` list: registered names as they are, each MCP server's entry as its tools."""
    out: list[str] = []
    for entry in entries:
        out += mcp_tools(entry) if is_mcp_entry(entry) else [str(entry)]
    return tuple(out)
