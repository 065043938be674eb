"""steprl's verifiers harness: one chat request per agent segment, made in-process through verifiers' interception.

verifiers' own harnesses launch a program (bash, a coding agent) built with `uv`; steprl's policy is not such a
program. This one is the loop verifiers' `Harness.launch` contract allows in-process: it sends the segment's
conversation to the interception endpoint (which records the trace that the taskset's rewards read) and returns
after the model's reply. Multi-turn episodes come from the env (an `Env.run` that answers the agent with
`interaction.turn(...)`), each turn a resumed segment. The harness id is this module's name (verifiers imports a
harness by id and takes the one `Harness` subclass in `__all__`). verifiers imports an id as a top-level module
(`harnesses.<id>` first, so a dotted id cannot name it): `register()` makes this module importable as
`steprl_chat_harness`, the id steprl's env configs use.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
import verifiers.v1 as vf
from verifiers.v1.dialects.chat import message_to_wire

HARNESS_ID = "steprl_chat_harness"
__all__ = ["SteprlChatHarness"]


def register() -> str:
    """Make this module importable under HARNESS_ID (what verifiers' loader imports); returns the id."""
    sys.modules.setdefault(HARNESS_ID, sys.modules[__name__])
    return HARNESS_ID


class SteprlChatHarness(vf.Harness[vf.HarnessConfig]):
    """Send the conversation once, keep the reply: the model's turn is steprl's policy's turn."""

    APPENDS_SYSTEM_PROMPT = True
    SUPPORTS_RESUME = True
    EXECUTES_CODE = False
    NEEDS_CONTAINER = False

    async def launch(self, ctx: Any, trace: Any, runtime: Any, endpoint: str, secret: str, mcp_urls: Any,
                     data: Any, tool_interception_url: str | None = None) -> Any:
        """One chat completion through `endpoint`; a refused request (e.g. verifiers' max_turns) ends the run."""
        system, prompt = self.resolve_prompt(data)
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:  # a resumed segment: the conversation so far
            messages = [message_to_wire(m) for m in prompt]
        if system and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        if getattr(self, "_http", None) is None:  # one client per episode's harness, reused by its resumed turns
            # the interception endpoint is plain HTTP on 127.0.0.1: no TLS, so no CA bundle to load (loading one
            # costs ~25 ms per episode); no timeout: steprl's turn takes as long as its sampler does
            self._http = httpx.AsyncClient(timeout=None, verify=False)
        r = await self._http.post(f"{endpoint}/chat/completions", json={"model": ctx.model, "messages": messages},
                                  headers={"Authorization": f"Bearer {secret}"})
        if r.status_code != 200:
            return vf.ProgramResult(exit_code=1, stdout="", stderr=r.text[:500])
        return vf.ProgramResult(exit_code=0, stdout="", stderr="")

    async def cleanup(self, trace: Any, runtime: Any) -> None:
        """Close this episode's HTTP client (made again if the harness plays another)."""
        http, self._http = getattr(self, "_http", None), None
        if http is not None:
            await http.aclose()
