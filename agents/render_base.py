"""What every renderer (turn format) provides, and the parts all of them share.

A renderer turns a conversation into token ids incrementally and never re-tokenizes:

    prompt_ids(system, obs_0, tools) + turn_0 + observation_ids(obs_1, turn_0) + turn_1 + ...

where each `turn_i` is what the agent generated, token for token. Text from the system prompt,
observations and tools is encoded with special-token parsing OFF, so a tool result containing
"<|im_end|>" can never forge a control token; template markup is encoded with it ON.
A renderer also knows which ids end a turn (`stop_token_ids`: end-of-turn, EOS) and which may
never be sampled inside one (`banned_ids`: pad, bos, turn-start markup), and parses its family's
tool calls (`parse_tool_call`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from transformers import PreTrainedTokenizerBase

from steprl.agents.tokenizer import encode_text

_RESULT = re.compile(r"\A<(tool_response|result)>(.*)</\1>\Z", re.DOTALL)


def tool_result_text(observation: str) -> str | None:
    """The result inside `<tool_response>X</tool_response>` or `<result>X</result>` (the env's tool-result
    rendering), or None when the observation is not a tool result (then it is a user message)."""
    m = _RESULT.match(observation)
    return None if m is None else m.group(2)


class TurnFormat(Protocol):
    """What the sampler, the rollout and warm-up SFT need from a renderer."""

    tokenizer: PreTrainedTokenizerBase
    stop_token_ids: tuple[int, ...]
    """Ids that end an agent turn when generated (kept as the turn's last, trained, token)."""
    banned_ids: tuple[int, ...]
    """Ids that can never occur inside an agent turn: the sampler gives them -inf."""
    template_tools: bool
    """True when tools are rendered by the chat template (`prompt_ids(..., tools=...)`)."""

    def prompt_ids(self, system: str, observation: str, tools: Sequence[dict] | None = None) -> list[int]:
        """Tokens before the agent's first turn."""

    def observation_ids(self, observation: str, turn_ids: Sequence[int] = ()) -> list[int]:
        """Tokens appended after the agent turn `turn_ids` (closing it when it did not end with a stop id)."""

    def turn_ids(self, text: str) -> list[int]:
        """Tokens of an agent turn given as text (demonstrations), ending as generation would."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` (special tokens kept, no clean-up)."""

    def parse_tool_call(self, text: str) -> dict[str, Any] | None:
        """{"name", "arguments"} of the first tool call in `text` in this family's syntax, or None."""


class RendererBase:
    """Shared parts of all renderers: decoding, agent-turn encoding, demos and transcripts."""

    tokenizer: PreTrainedTokenizerBase
    stop_token_ids: tuple[int, ...] = ()
    banned_ids: tuple[int, ...] = ()
    template_tools: bool = False

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` (special tokens kept, no clean-up of spaces)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def turn_ids(self, text: str) -> list[int]:
        """Tokens of an agent turn written as text (special parsing off)."""
        return encode_text(self.tokenizer, text)

    def parse_tool_call(self, text: str) -> dict[str, Any] | None:  # pragma: no cover - overridden
        """No native tool-call syntax: the env's protocol parses the text."""
        return None

    def encode_demo(
        self, system: str, first_obs: str, turns: Sequence[str], observations: Sequence[str],
        tools: Sequence[dict] | None = None,
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
        ids = list(self.prompt_ids(system, first_obs, tools))
        mask = [0] * len(ids)
        for i, turn in enumerate(turns):
            t = self.turn_ids(turn)
            ids += t
            mask += [1] * len(t)
            if i < len(observations):
                o = self.observation_ids(observations[i], t)
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

    def prompt_ids(self, system: str, observation: str,
                   tools: Sequence[dict] | None = None) -> list[int]:  # pragma: no cover - abstract
        """Tokens before the agent's first turn."""
        raise NotImplementedError

    def observation_ids(self, observation: str, turn_ids: Sequence[int] = ()) -> list[int]:  # pragma: no cover
        """Tokens appended after an agent turn."""
        raise NotImplementedError
