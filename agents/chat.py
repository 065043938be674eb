"""Renderers (turn formats): how a system prompt, tools, observations and agent turns become token ids.

One renderer per family of chat format, chosen from the tokenizer by `make_turn_format`
(tinker-cookbook's idea; docs/architecture.md#agents):

- `PlainTurnFormat` (agents/render_compact.py): steprl's compact format for models trained from
  scratch with the character tokenizer (no chat template).
- `ChatMLRenderer` (agents/render_chatml.py): ChatML / Qwen2 with Hermes `<tool_call>` JSON.
- `Llama3Renderer` (agents/render_llama3.py): Llama 3 headers with JSON tool calls.
- `ChatTemplateTurnFormat` (agents/render_template.py): any other chat template, ended by the control
  token that closes its assistant turn (Gemma `<end_of_turn>`, Phi-3 `<|end|>`; eos when there is none).

The protocol they share is `agents.render_base.TurnFormat`.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from steprl.agents.render_base import RendererBase, TurnFormat, tool_result_text
from steprl.agents.render_chatml import ChatMLRenderer
from steprl.agents.render_compact import PlainTurnFormat
from steprl.agents.render_llama3 import Llama3Renderer
from steprl.agents.render_template import ChatTemplateTurnFormat

__all__ = ["ChatMLRenderer", "ChatTemplateTurnFormat", "Llama3Renderer", "PlainTurnFormat", "RendererBase",
           "TurnFormat", "make_turn_format", "renderer_family", "tool_result_text"]


def renderer_family(tokenizer: PreTrainedTokenizerBase) -> str:
    """`compact` (no chat template), `chatml`, `llama3` or `template`, from the tokenizer's chat template."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return "compact"
    text = template if isinstance(template, str) else " ".join(map(str, dict(template).values()))
    if "<|im_start|>" in text:
        return "chatml"
    if "<|start_header_id|>" in text:
        return "llama3"
    return "template"


_FAMILIES = {"compact": PlainTurnFormat, "chatml": ChatMLRenderer, "llama3": Llama3Renderer,
             "template": ChatTemplateTurnFormat}


def make_turn_format(tokenizer: PreTrainedTokenizerBase) -> TurnFormat:
    """The renderer of the tokenizer's chat-format family (see `renderer_family`)."""
    return _FAMILIES[renderer_family(tokenizer)](tokenizer)
