"""Llama 3 renderer: `<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>`, JSON tool calls.

Llama 3.1+ templates render `tools` as JSON function descriptions (in the first user message by
default); the model calls a tool with a bare JSON object `{"name": ..., "parameters": {...}}`
(optionally after `<|python_tag|>`) and ends its turn with `<|eot_id|>` (`<|eom_id|>` after a
call in ipython mode); tool results are `ipython`-role messages.
"""

from __future__ import annotations

import json
from typing import Any

from steprl.agents.render_template import ChatTemplateTurnFormat


def parse_llama3_call(text: str) -> dict[str, Any] | None:
    """{"name", "arguments"} of a Llama 3 JSON tool call (`parameters` or `arguments`), or None."""
    body = text.replace("<|python_tag|>", "").replace("<|eot_id|>", "").replace("<|eom_id|>", "").strip()
    start = body.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(body[start:])
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("parameters", obj.get("arguments", {}))
    return {"name": obj["name"], "arguments": args} if isinstance(args, dict) else None


class Llama3Renderer(ChatTemplateTurnFormat):
    """Llama 3 with JSON tool calls (see the module docstring)."""

    eot_text = "<|eot_id|>"
    tool_role = "ipython"

    def __init__(self, tokenizer: Any):
        """As the template renderer; `<|eom_id|>` (when the tokenizer has it) also ends a turn."""
        super().__init__(tokenizer)
        eom = tokenizer.convert_tokens_to_ids("<|eom_id|>") if "<|eom_id|>" in tokenizer.get_vocab() else None
        if eom is not None and eom not in self.stop_token_ids:
            self.stop_token_ids = self.stop_token_ids + (eom,)
            self.banned_ids = tuple(i for i in self.banned_ids if i != eom)

    def parse_tool_call(self, text: str) -> dict[str, Any] | None:
        """The JSON tool call of the turn."""
        return parse_llama3_call(text)
