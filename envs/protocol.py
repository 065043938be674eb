"""The tool-call protocol: how an agent turn is parsed, and how calls, results and answers are rendered.

Two formats, looked up by name with `get_protocol`:

- `hermes` (default, what chat models speak):
  `<tool_call>{"name": "calc", "arguments": {"expression": "12*7"}}</tool_call>`,
  results `<tool_response>84</tool_response>`, answers `<answer>84</answer>`.
- `compact` (cheap for tiny models): `<call>calc 12*7</call>` (tool name, one space, the single
  argument's raw text; JSON arguments after the name for other tools), results
  `<result>84</result>`, answers `<answer>84</answer>`.

`parse` never raises. Text before the first tag (thoughts) is ignored; the earliest call or
answer tag decides what the turn is; a missing final closing tag is tolerated (some
generators strip the stop string). `render_result` escapes `&`, `<` and `>`, so a tool result
can never contain any delimiter and cannot forge a call, an answer or a result end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from steprl.envs.text import to_ascii
from steprl.envs.tools import Tool, get_tool

#: Longest turn `parse` looks at; longer input is Malformed without being scanned.
MAX_PARSE_CHARS = 20_000
#: Argument key used by the compact format when the tool is unknown or has several parameters.
RAW_ARGUMENT = "input"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")


@dataclass(frozen=True)
class ToolCall:
    """A parsed tool call: tool name and JSON-like arguments."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """A final answer (the text between the answer tags, unstripped)."""

    text: str


@dataclass(frozen=True)
class Malformed:
    """A turn that is neither a well-formed call nor an answer; `reason` is shown to the agent."""

    reason: str


Parsed = ToolCall | Answer | Malformed


def escape(text: str) -> str:
    """Make `text` ASCII and free of `<`, `>` and `&` (HTML-style entities), so it holds no delimiter."""
    return to_ascii(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _json_dumps(obj: Any) -> str:
    """ASCII JSON in which `<` is written `\\u003c`, so it never contains a closing tag."""
    return json.dumps(obj, ensure_ascii=True).replace("<", "\\u003c")


def _loads_object(body: str) -> dict | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError, MemoryError):
        return None
    return value if isinstance(value, dict) else None


class Protocol:
    """Base class: tags, stop strings, and the shared parse loop; subclasses parse/render call bodies."""

    name: str = ""
    call_open: str = ""
    call_close: str = ""
    result_open: str = ""
    result_close: str = ""
    answer_open: str = "<answer>"
    answer_close: str = "</answer>"

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Where an agent turn ends: after a call or after an answer."""
        return (self.call_close, self.answer_close)

    # -- parsing ---------------------------------------------------------------------------

    def parse(self, text: Any) -> Parsed:
        """Classify one agent turn. Never raises, whatever `text` is."""
        try:
            return self._parse(text)
        except Exception as exc:  # noqa: BLE001 - last line of defence: parse never raises
            return Malformed(f"unparsable turn ({type(exc).__name__})")

    def _parse(self, text: Any) -> Parsed:
        if not isinstance(text, str):
            return Malformed("turn is not text")
        if len(text) > MAX_PARSE_CHARS:
            return Malformed(f"turn too long (over {MAX_PARSE_CHARS} characters)")
        i_call = text.find(self.call_open)
        i_ans = text.find(self.answer_open)
        if i_call < 0 and i_ans < 0:
            return Malformed("no tool call or answer")
        if i_ans >= 0 and (i_call < 0 or i_ans < i_call):
            start = i_ans + len(self.answer_open)
            end = text.find(self.answer_close, start)
            return Answer(text[start:] if end < 0 else text[start:end])
        start = i_call + len(self.call_open)
        end = text.find(self.call_close, start)
        body = text[start:] if end < 0 else text[start:end]
        return self._parse_call(body)

    def _parse_call(self, body: str) -> Parsed:
        raise NotImplementedError

    @staticmethod
    def _make_call(name: Any, arguments: Any) -> Parsed:
        if not isinstance(name, str) or not _NAME.match(name):
            return Malformed("bad tool name")
        if isinstance(arguments, str):
            arguments = _loads_object(arguments)
        if not isinstance(arguments, dict):
            return Malformed("tool arguments must be a JSON object")
        return ToolCall(name, arguments)

    # -- rendering -------------------------------------------------------------------------

    def render_call(self, call: ToolCall) -> str:
        """The text of an agent turn that makes `call` (ends with a stop string)."""
        raise NotImplementedError

    def render_answer(self, text: str) -> str:
        """The text of an agent turn that answers `text` (ends with a stop string)."""
        return f"{self.answer_open}{text}{self.answer_close}"

    def render_result(self, text: str) -> str:
        """A tool result (or error message) as an observation, with delimiters escaped."""
        return f"{self.result_open}{escape(text)}{self.result_close}"

    def describe_tools(self, tools: Sequence[Tool]) -> str:
        """Tool descriptions for the system prompt in this format."""
        raise NotImplementedError

    def system_prompt(self, task: str, tools: Sequence[Tool]) -> str:
        """Instructions for the task plus the tool descriptions, in this format (printable ASCII)."""
        raise NotImplementedError


class HermesProtocol(Protocol):
    """Hermes/Qwen style: JSON calls in `<tool_call>`, results in `<tool_response>`."""

    name = "hermes"
    call_open, call_close = "<tool_call>", "</tool_call>"
    result_open, result_close = "<tool_response>", "</tool_response>"

    def _parse_call(self, body: str) -> Parsed:
        obj = _loads_object(body.strip())
        if obj is None:
            return Malformed("tool call is not a JSON object")
        if "name" not in obj:
            return Malformed("tool call needs a name")
        return self._make_call(obj.get("name"), obj.get("arguments", {}))

    def render_call(self, call: ToolCall) -> str:
        """`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`."""
        body = _json_dumps({"name": call.name, "arguments": dict(call.arguments)})
        return f"{self.call_open}{body}{self.call_close}"

    def describe_tools(self, tools: Sequence[Tool]) -> str:
        """One JSON function description per line."""
        return "\n".join(_json_dumps(t.spec()) for t in tools)

    def system_prompt(self, task: str, tools: Sequence[Tool]) -> str:
        """Task line, then how to call, the tools, and how to answer."""
        lines = [task]
        if tools:
            lines += [
                'Call a tool with <tool_call>{"name": NAME, "arguments": {...}}</tool_call>; '
                "the result comes as <tool_response>...</tool_response>. Tools:",
                self.describe_tools(tools),
            ]
        lines.append("Give the final answer as <answer>...</answer>.")
        return to_ascii("\n".join(lines))


class CompactProtocol(Protocol):
    """Compact: `<call>NAME RAW</call>`, results in `<result>`; the raw text is the tool's single argument."""

    name = "compact"
    call_open, call_close = "<call>", "</call>"
    result_open, result_close = "<result>", "</result>"

    @staticmethod
    def _single_param(name: str) -> str | None:
        tool = get_tool(name)
        return tool.params[0] if tool is not None and len(tool.params) == 1 else None

    def _parse_call(self, body: str) -> Parsed:
        body = body.strip()
        name, _, rest = body.partition(" ")
        if not name:
            return Malformed("tool call needs a name")
        if rest.startswith("{"):
            obj = _loads_object(rest)
            if obj is not None:
                return self._make_call(name, obj)
        return self._make_call(name, {self._single_param(name) or RAW_ARGUMENT: rest})

    @staticmethod
    def _plain(value: Any) -> bool:
        return (
            isinstance(value, str)
            and value == value.strip()
            and value != ""
            and not value.startswith("{")
            and "<" not in value
            and value == to_ascii(value)
        )

    def render_call(self, call: ToolCall) -> str:
        """`<call>NAME RAW</call>` for a tool's single argument, else `<call>NAME {json}</call>`."""
        args = dict(call.arguments)
        single = self._single_param(call.name) or RAW_ARGUMENT
        if list(args) == [single]:
            value = args[single]
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if self._plain(value):
                return f"{self.call_open}{call.name} {value}{self.call_close}"
        return f"{self.call_open}{call.name} {_json_dumps(args)}{self.call_close}"

    def describe_tools(self, tools: Sequence[Tool]) -> str:
        """`<call>calc EXPR</call> exact arithmetic ...` per tool, space separated."""
        return " ".join(f"{self.call_open}{t.name} {t.usage}{self.call_close}" for t in tools)

    def system_prompt(self, task: str, tools: Sequence[Tool]) -> str:
        """As short as possible: task, tool usages, answer tag."""
        parts = [task]
        if tools:
            parts.append("Tools: " + self.describe_tools(tools))
        parts.append("Answer: <answer>X</answer>")
        return to_ascii(" ".join(p for p in parts if p))


class Llama3Protocol(Protocol):
    """Llama 3.x custom tools: a tool call is the whole turn as one JSON object
    `{"name": NAME, "parameters": {...}}` ended by the model's end-of-turn token (no closing tag: the chat
    renderer stops the turn there); results arrive as plain text in the template's `ipython` role."""

    name = "llama3"

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Only the answer has a closing tag; a call ends with the end-of-turn token."""
        return (self.answer_close,)

    def _parse(self, text: Any) -> Parsed:
        if not isinstance(text, str):
            return Malformed("turn is not text")
        if len(text) > MAX_PARSE_CHARS:
            return Malformed(f"turn too long (over {MAX_PARSE_CHARS} characters)")
        body = text.strip()
        if body.startswith("{"):
            return self._parse_call(body)
        i_ans = text.find(self.answer_open)
        if i_ans < 0:
            return Malformed("no tool call or answer")
        start = i_ans + len(self.answer_open)
        end = text.find(self.answer_close, start)
        return Answer(text[start:] if end < 0 else text[start:end])

    def _parse_call(self, body: str) -> Parsed:
        obj = _loads_object(body)
        if obj is None:
            return Malformed("tool call is not a JSON object")
        if "name" not in obj:
            return Malformed("tool call needs a name")
        return self._make_call(obj.get("name"), obj.get("parameters", obj.get("arguments", {})))

    def render_call(self, call: ToolCall) -> str:
        """`{"name": ..., "parameters": {...}}`: the whole turn."""
        return _json_dumps({"name": call.name, "parameters": dict(call.arguments)})

    def render_result(self, text: str) -> str:
        """The result as plain escaped text (the template's ipython role carries it)."""
        return escape(text)

    def describe_tools(self, tools: Sequence[Tool]) -> str:
        """One JSON function description per line."""
        return "\n".join(_json_dumps(t.spec()) for t in tools)

    def system_prompt(self, task: str, tools: Sequence[Tool]) -> str:
        """Task line, then how to call (a bare JSON object), the tools, and how to answer."""
        lines = [task]
        if tools:
            lines += ['Call a tool by replying with only {"name": NAME, "parameters": {...}}. Tools:',
                      self.describe_tools(tools)]
        lines.append("Give the final answer as <answer>...</answer>.")
        return to_ascii("\n".join(lines))


_PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (HermesProtocol(), CompactProtocol(), Llama3Protocol())}


def get_protocol(name: str) -> Protocol:
    """The protocol registered as `name` ("hermes", "compact" or "llama3"); ValueError naming the choices otherwise."""
    try:
        return _PROTOCOLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown format {name!r}; choose from {sorted(_PROTOCOLS)}") from None


def protocol_names() -> list[str]:
    """Sorted names of the registered formats."""
    return sorted(_PROTOCOLS)
