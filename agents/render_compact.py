"""steprl's compact renderer for models trained from scratch (the character tokenizer).

`<bos>` + system + "\\n" + obs + "\\n", then the agent's turn, then "\\n" + obs + "\\n" after every
turn. Tools are described in the system text by the env's protocol, turns end on the env's stop
strings only, nothing is banned: exactly the behaviour steprl had before renderers existed, so
runs of the smoke and quickstart presets are unchanged bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from steprl.agents.render_base import RendererBase
from steprl.agents.tokenizer import encode_text


class PlainTurnFormat(RendererBase):
    """steprl's minimal format: `<bos>` system \\n obs \\n [turn] \\n obs \\n [turn] ..."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        """Use `tokenizer` (needs a bos token, or none is emitted)."""
        self.tokenizer = tokenizer

    def prompt_ids(self, system: str, observation: str, tools: Sequence[dict] | None = None) -> list[int]:
        """`<bos>` + system + "\\n" + observation + "\\n" (system omitted with its newline when empty).

        `tools` is ignored: the env's protocol describes them in `system`."""
        bos = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        head = f"{system}\n" if system else ""
        return bos + encode_text(self.tokenizer, f"{head}{observation}\n")

    def observation_ids(self, observation: str, turn_ids: Sequence[int] = ()) -> list[int]:
        """"\\n" + observation + "\\n"."""
        return encode_text(self.tokenizer, f"\n{observation}\n")
