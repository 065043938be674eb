"""A renderer on the tokenizer's own chat template: tools through `apply_chat_template(..., tools=...)`,
tool results in the template's tool role, the turn closed by the template's end-of-turn token.

The end-of-turn token is read from the template, not taken to be `eos_token`: the first token of the
markup that closes the assistant turn of a rendered user/assistant/user conversation, when that is a
control (added) token (Gemma's `<end_of_turn>`, Phi-3's `<|end|>`, ChatML's `<|im_end|>`, Mistral's
`</s>`). Only when the closing markup starts with ordinary text is eos the end-of-turn token.

Markup is found by rendering the template around placeholders; the text between placeholders is
encoded with special tokens ON, message content with them OFF, so the prompt is the template's own
rendering while no content can forge a control token. The markup after an assistant turn starts
with the end-of-turn text; when the generated turn already ends with that token (the model
stopped on it) it is not repeated, otherwise (a stop string or the token budget ended the turn) it
is appended, with mask 0, before the next message. Family subclasses (render_chatml, render_llama3)
set the end-of-turn token, the tool role and the tool-call parser.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from steprl.agents.chat_date import chat_date_of, pin_chat_date
from steprl.agents.render_base import RendererBase, tool_result_text
from steprl.agents.tokenizer import encode_markup, encode_text

_SYS = "\x00STEPRL_SYSTEM\x00"
_OBS = "\x00STEPRL_OBSERVATION\x00"
_AGENT = "\x00STEPRL_AGENT\x00"


def openai_tools(tools: Sequence[dict] | None) -> list[dict] | None:
    """Tool specs as `{"type": "function", "function": spec}` (the shape chat templates are trained on)."""
    if not tools:
        return None
    return [t if t.get("type") == "function" else {"type": "function", "function": dict(t)} for t in tools]


class ChatTemplateTurnFormat(RendererBase):
    """Generic renderer on `tokenizer.chat_template` (see the module docstring)."""

    eot_text: str | None = None
    """End-of-turn token text of the family; None: read from the template (`template_end_of_turn`)."""
    tool_role: str = "tool"
    """Role of tool results in the template's messages."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        """Use `tokenizer.chat_template` (must be set)."""
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{type(self).__name__} needs a tokenizer with a chat_template")
        self.tokenizer = tokenizer
        self.chat_date = chat_date_of(tokenizer)
        """The date the template's `strftime_now` returns (agents/chat_date.py)."""
        templates = tokenizer.chat_template
        self._pinned = {t: pin_chat_date(t, self.chat_date)
                        for t in (templates.values() if isinstance(templates, dict) else [templates])}
        eot = self.eot_text if self.eot_text is not None else self.template_end_of_turn()
        self.eot_ids = encode_markup(tokenizer, eot) if eot else []
        stops = list(self.eot_ids[-1:])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
            stops.append(tokenizer.eos_token_id)
        self.stop_token_ids = tuple(stops)
        self.banned_ids = tuple(sorted(set(_special_ids(tokenizer)) - set(self.stop_token_ids)))
        self.template_tools = self._renders_tools()
        """Whether the template writes tool specs into the prompt (Qwen2.5, Llama 3.1); one that ignores
        them (SmolLM2's ChatML) gets the env's own system text, tool descriptions and call syntax included."""
        self._prompt_parts: dict[str, list[str]] = {}
        convo = [{"role": "system", "content": _SYS}, {"role": "user", "content": _SYS},
                 {"role": "assistant", "content": _AGENT}]
        self._obs_parts = {"user": self._after_turn(convo + [{"role": "user", "content": _OBS}])}
        try:
            self._obs_parts["tool"] = self._after_turn(convo + [{"role": self.tool_role, "content": _OBS}])
        except Exception:  # noqa: BLE001 - a template without a tool role: results go in user messages
            self._obs_parts["tool"] = self._obs_parts["user"]

    def _render(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """The template's text for `messages` with the assistant generation prompt, at the pinned date."""
        template = self._pinned.get(self.tokenizer.get_chat_template(None, tools))
        return self.tokenizer.apply_chat_template(messages, tools=tools, chat_template=template, tokenize=False,
                                                  add_generation_prompt=True)

    def _renders_tools(self) -> bool:
        """Whether rendering with a tool spec puts it in the prompt (a template may accept `tools` and drop it)."""
        probe = [{"type": "function", "function": {"name": "steprl_probe_tool", "description": "probe",
                                                   "parameters": {"type": "object", "properties": {}}}}]
        msgs = [{"role": "system", "content": _SYS}, {"role": "user", "content": _OBS}]
        try:
            return "steprl_probe_tool" in self._render(msgs, probe)
        except Exception:  # noqa: BLE001 - a template that refuses tools: the env's system text describes them
            return False

    def template_end_of_turn(self) -> str | None:
        """Text of the control token that closes the template's assistant turn, else the eos token.

        Rendered without a system message (some templates refuse one) and with alternating roles;
        a template that cannot render that conversation falls back to eos as before.
        """
        tok = self.tokenizer
        convo = [{"role": "user", "content": _OBS}, {"role": "assistant", "content": _AGENT},
                 {"role": "user", "content": _OBS}]
        try:
            text = self._render(convo)
        except Exception:  # noqa: BLE001 - a template that refuses this conversation: eos, as before
            return tok.eos_token
        rest = text[text.index(_AGENT) + len(_AGENT):] if text.count(_AGENT) == 1 else ""
        first = encode_markup(tok, rest)[:1]
        added = set(_special_ids(tok)) | {int(i) for i in getattr(tok, "added_tokens_decoder", {})}
        if first and first[0] in added:
            return tok.convert_ids_to_tokens(first[0])
        return tok.eos_token

    def _after_turn(self, convo: list[dict]) -> list[str]:
        """Markup/placeholder parts after the assistant turn, without the leading end-of-turn text."""
        text = self._render(convo)
        rest = text[text.index(_AGENT) + len(_AGENT):]
        eot = self.decode(self.eot_ids)
        if eot and rest.startswith(eot):
            rest = rest[len(eot):]
        return _split(rest, (_OBS,))

    def _encode(self, parts: list[str], values: dict[str, str]) -> list[int]:
        """Markup with special tokens on, placeholder values with them off."""
        ids: list[int] = []
        for part in parts:
            ids += encode_text(self.tokenizer, values[part]) if part in values else encode_markup(self.tokenizer, part)
        return ids

    def prompt_ids(self, system: str, observation: str, tools: Sequence[dict] | None = None) -> list[int]:
        """The template for [system, user(observation)] with `tools` and the assistant generation prompt."""
        specs = openai_tools(tools)
        key = json.dumps(specs, sort_keys=True)
        if key not in self._prompt_parts:
            msgs = [{"role": "system", "content": _SYS}, {"role": "user", "content": _OBS}]
            self._prompt_parts[key] = _split(self._render(msgs, specs), (_SYS, _OBS))
        return self._encode(self._prompt_parts[key], {_SYS: system, _OBS: observation})

    def observation_ids(self, observation: str, turn_ids: Sequence[int] = ()) -> list[int]:
        """Close the assistant turn (unless it ended with a stop id), then the observation as a tool result
        (the env's `<tool_response>X</tool_response>` becomes a tool-role message X) or a user message,
        then the generation prompt."""
        close = [] if turn_ids and turn_ids[-1] in self.stop_token_ids else list(self.eot_ids)
        result = tool_result_text(observation)
        role, text = ("user", observation) if result is None else ("tool", result)
        return close + self._encode(self._obs_parts[role], {_OBS: text})

    def turn_ids(self, text: str) -> list[int]:
        """An agent turn written as text, ended by the end-of-turn token as a generated turn would be."""
        return encode_text(self.tokenizer, text) + list(self.eot_ids)


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of every special token: pad, bos, eos, unk, additional specials and added tokens marked special."""
    ids = set(tokenizer.all_special_ids)
    for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return sorted(ids)


def _split(text: str, placeholders: tuple[str, ...]) -> list[str]:
    """[markup, ph_0, markup, ph_1, ..., markup]: text cut around each placeholder, in order."""
    parts, rest = [], text
    for ph in placeholders:
        if rest.count(ph) != 1:
            raise ValueError(f"chat template does not render message content verbatim exactly once ({ph!r})")
        head, rest = rest.split(ph)
        parts += [head, ph]
    return parts + [rest]
