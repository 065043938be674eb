"""The turn format: how a system prompt, observations and agent turns become token ids.

An episode's token sequence is built incrementally and never re-tokenized:

    prompt_ids(system, obs_0) + turn_0 + observation_ids(obs_1) + turn_1 + ...

where each `turn_i` is what the agent generated (it ends with an env stop string such as
`</call>`). Text from the system prompt, observations and tools is encoded with special-token
parsing OFF, so a tool result containing "<eos>" can never forge a control token.

Two formats:
- `PlainTurnFormat` (steprl's, for the char tokenizer): `<bos>` + system + "\\n" + obs + "\\n",
  then the agent's turn, then "\\n" + obs + "\\n" after every turn.
- `ChatTemplateTurnFormat`: the tokenizer's own chat template (system / user / assistant
  messages); observations are user messages. Template markup is encoded with special
  tokens ON, message content with them OFF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from steprl.agents.tokenizer import encode_markup, encode_text

_SYS = "\x00STEPRL_SYSTEM\x00"
_OBS = "\x00STEPRL_OBSERVATION\x00"
_AGENT = "\x00STEPRL_AGENT\x00"


class TurnFormat(Protocol):
    """What the sampler, the rollout and warm-up SFT need from a turn format."""

    tokenizer: PreTrainedTokenizerBase

    def prompt_ids(self, system: str, observation: str) -> list[int]:
        """Tokens before the agent's first turn."""

    def observation_ids(self, observation: str) -> list[int]:
        """Tokens appended after an agent turn (the env's answer to it)."""

    def turn_ids(self, text: str) -> list[int]:
        """Tokens of an agent turn given as text (demonstrations)."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` (special tokens kept, no clean-up)."""


class _Base:
    """Shared parts of both formats: decoding, agent-turn encoding, demos and transcripts."""

    tokenizer: PreTrainedTokenizerBase

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` (special tokens kept, no clean-up of spaces)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def turn_ids(self, text: str) -> list[int]:
        """Tokens of an agent turn written as text (special parsing off)."""
        return encode_text(self.tokenizer, text)

    def encode_demo(
        self, system: str, first_obs: str, turns: Sequence[str], observations: Sequence[str]
    ) -> tuple[list[int], list[int]]:
        """(ids, action_mask) of a demonstration, token for token what playing it would produce.

        `observations[i]` answers `turns[i]`; there are as many observations as turns, or one
        fewer (the last turn ended the episode). action_mask is 1 exactly on agent-turn tokens.
        """
        if not (len(observations) == len(turns) or len(observations) == len(turns) - 1):
            raise ValueError(
                f"encode_demo: {len(turns)} turns need {len(turns)} or {len(turns) - 1} observations, got "
                f"{len(observations)}"
            )
        ids = list(self.prompt_ids(system, first_obs))
        mask = [0] * len(ids)
        for i, turn in enumerate(turns):
            t = self.turn_ids(turn)
            ids += t
            mask += [1] * len(t)
            if i < len(observations):
                o = self.observation_ids(observations[i])
                ids += o
                mask += [0] * len(o)
        return ids, mask

    def render_transcript(self, ids: Sequence[int], action_mask: Sequence[int]) -> str:
        """Human-readable transcript: agent tokens wrapped in [[...]] (for logs and replay)."""
        out, start = [], 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or action_mask[i] != action_mask[start]:
                text = self.decode(ids[start:i])
                out.append(f"[[{text}]]" if action_mask[start] else text)
                start = i
        return "".join(out)

    def prompt_ids(self, system: str, observation: str) -> list[int]:  # pragma: no cover - abstract
        """Tokens before the agent's first turn."""
        raise NotImplementedError

    def observation_ids(self, observation: str) -> list[int]:  # pragma: no cover - abstract
        """Tokens appended after an agent turn."""
        raise NotImplementedError


class PlainTurnFormat(_Base):
    """steprl's minimal format: `<bos>` system \\n obs \\n [turn] \\n obs \\n [turn] ..."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        """Use `tokenizer` (needs a bos token, or none is emitted)."""
        self.tokenizer = tokenizer

    def prompt_ids(self, system: str, observation: str) -> list[int]:
        """`<bos>` + system + "\\n" + observation + "\\n" (system omitted with its newline when empty)."""
        bos = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        head = f"{system}\n" if system else ""
        return bos + encode_text(self.tokenizer, f"{head}{observation}\n")

    def observation_ids(self, observation: str) -> list[int]:
        """"\\n" + observation + "\\n"."""
        return encode_text(self.tokenizer, f"\n{observation}\n")


class ChatTemplateTurnFormat(_Base):
    """A tokenizer's own chat template: system + user(obs) messages, the agent as the assistant.

    Markup is found by rendering the template around placeholders; the text between
    placeholders is encoded with special tokens ON, message content with them OFF.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        """Use `tokenizer.chat_template` (must be set)."""
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("ChatTemplateTurnFormat needs a tokenizer with a chat_template")
        self.tokenizer = tokenizer
        first = self._render([{"role": "system", "content": _SYS}, {"role": "user", "content": _OBS}], True)
        self._prompt_parts = self._split(first, (_SYS, _OBS))
        convo = [
            {"role": "system", "content": _SYS},
            {"role": "user", "content": _SYS},
            {"role": "assistant", "content": _AGENT},
            {"role": "user", "content": _OBS},
        ]
        after = self._render(convo, True)
        cut = after.index(_AGENT) + len(_AGENT)
        self._obs_parts = self._split(after[cut:], (_OBS,))

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        """The template's text for `messages`."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    @staticmethod
    def _split(text: str, placeholders: tuple[str, ...]) -> list[str]:
        """[markup, ph_0, markup, ph_1, ..., markup]: text cut around each placeholder, in order."""
        parts, rest = [], text
        for ph in placeholders:
            if rest.count(ph) != 1:
                raise ValueError(f"chat template does not render message content verbatim exactly once ({ph!r})")
            head, rest = rest.split(ph)
            parts += [head, ph]
        return parts + [rest]

    def _encode(self, parts: list[str], values: dict[str, str]) -> list[int]:
        """Markup with special tokens on, placeholder values with them off."""
        ids: list[int] = []
        for part in parts:
            ids += encode_text(self.tokenizer, values[part]) if part in values else encode_markup(self.tokenizer, part)
        return ids

    def prompt_ids(self, system: str, observation: str) -> list[int]:
        """The template for [system, user(observation)] with the assistant generation prompt."""
        return self._encode(self._prompt_parts, {_SYS: system, _OBS: observation})

    def observation_ids(self, observation: str) -> list[int]:
        """End of the assistant turn, then user(observation), then the generation prompt."""
        return self._encode(self._obs_parts, {_OBS: observation})


def make_turn_format(tokenizer: PreTrainedTokenizerBase) -> TurnFormat:
    """The tokenizer's own chat template when it has one, else steprl's plain format."""
    if getattr(tokenizer, "chat_template", None):
        return ChatTemplateTurnFormat(tokenizer)
    return PlainTurnFormat(tokenizer)
