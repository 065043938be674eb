"""ChatML / Qwen2 renderer: `<|im_start|>role\\n...<|im_end|>`, Hermes tool calls in `<tool_call>` JSON.

Qwen2/2.5 templates render `tools` into the system message and wrap tool-role messages in
`<tool_response>` inside a user turn; the model calls a tool with
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` and ends its turn with `<|im_end|>`.
`<|im_start|>` (and pad / bos / other specials) can never occur inside an assistant turn, so they
are banned when sampling.
"""

from __future__ import annotations

import json
import re
from typing import Any

from steprl.agents.render_template import ChatTemplateTurnFormat

_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)


def parse_hermes_call(text: str) -> dict[str, Any] | None:
    """{"name", "arguments"} of the first `<tool_call>{json}</tool_call>` in `text`, or None (never raises)."""
    m = _CALL.search(text)
    if m is None:
        return None
    try:
        obj = json.loads(m.group(1).strip())
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return None
    return {"name": obj["name"], "arguments": args} if isinstance(args, dict) else None


class ChatMLRenderer(ChatTemplateTurnFormat):
    """ChatML/Qwen2 with Hermes tool calls (see the module docstring)."""

    eot_text = "<|im_end|>"
    tool_role = "tool"

    def parse_tool_call(self, text: str) -> dict[str, Any] | None:
        """The first Hermes `<tool_call>` JSON of the turn."""
        return parse_hermes_call(text)
