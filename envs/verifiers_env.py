"""`steprl/Verifiers-v0`: a verifiers (v1) environment played by steprl's policy, as a steprl text env.

    env:
      id: steprl/Verifiers-v0
      kwargs: {taskset: my_tasks, max_turns: 3, held_out_fraction: 0.2}

`taskset` is a verifiers taskset id (`pip install 'steprl[verifiers]'`): an importable module exporting one
`vf.Taskset` subclass (and, for a multi-turn env, one `vf.Env` subclass whose `run()` answers the agent), as
`vf.load_environment` reads it; `taskset_args` go into its `TasksetConfig`. steprl does not re-implement
verifiers: the episode is verifiers' own `Env.run_episode` (its env loop, its interception server recording the
trace, its taskset's rewards), run in a background event loop of this process with a local runtime
(`SubprocessConfig`) and steprl's in-process harness (`envs/verifiers_harness.py`).

steprl is the model. verifiers reaches a model through a `Client`; this env gives it an OpenAI-style chat endpoint
on 127.0.0.1 (`EvalClientConfig(base_url=...)`), and each request that arrives there is handed to the env
instance whose episode made it (the request's `model` names the instance). So control is steprl's, as for every
env: `reset(seed)` starts the episode and returns when verifiers first asks the model (the system message is the
`system`, the rest the observation); `step(text)` answers that request with the text steprl's sampler produced
(its tokens and behaviour log-probs are steprl's record, under steprl's step-seeded rule) and returns at the next
request (observation: the messages after the agent's reply) or when the episode ends (reward: the trace's reward,
the sum of the taskset's weighted rewards; success: reward >= `success_reward`). verifiers' sampling arguments
(temperature, max_tokens) are ignored: steprl's sampler decides. An episode cut at `max_turns` is cancelled. If
verifiers sends nothing for `turn_timeout_s` after a reply, that is a `ToolTimeout` (a fault of the run: the
micro-batch plays again), never an outcome.

Tasks: `list(taskset)` in verifiers' order, split into training and held-out tasks by steprl's seeded rule keyed on
the task's own `key` (sha256 of its data; `envs/qa_data.py`), so the split never depends on order or machine; env
seeds below 2**31 draw training tasks, seeds at or above it held-out ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import re
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import gymnasium as gym
import numpy as np

from steprl.envs.held_context import HeldContext
from steprl.envs.process_resources import SHARED, resource_key
from steprl.envs.qa_data import held_out
from steprl.envs.qa_file import HELD_OUT_SEEDS
from steprl.envs.text import MAX_ACTION_CHARS, MAX_OBS_CHARS, fit, text_space
from steprl.envs.tools import ToolTimeout

log = logging.getLogger(__name__)
INSTALL_HINT = "verifiers is not installed; install the optional extra with: pip install 'steprl[verifiers]'"
START_TIMEOUT_S = 120.0
TASKSET_ID = re.compile(r"([A-Za-z0-9_.-]+/)?[a-z_][a-z0-9_-]*(@[A-Za-z0-9_.+-]+)?\Z")
"""A verifiers taskset id: a top-level module name (hub ids `owner/name@version` import as `name`)."""


def content_text(message: Mapping[str, Any]) -> str:
    """A chat message's content as text (a list of parts joined by their text)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def completion(text: str, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion answering with `text` (what verifiers' EvalClient parses)."""
    return {"id": "steprl", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


class VerifiersRuntime:
    """A loaded verifiers env held serving on a background event loop, with the policy endpoint its client calls."""

    def __init__(self, taskset: str, taskset_args: Mapping[str, Any]) -> None:
        try:
            import verifiers.v1 as vf
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc
        self.vf = vf
        self.taskset_id = taskset
        self.inboxes: dict[str, queue.Queue] = {}
        self._names = itertools.count()
        self._running: set[asyncio.Task] = set()  # episodes in flight (cancelled at close)
        self._pending: set[asyncio.Future] = set()  # model requests waiting for their env instance's text
        from steprl.envs.verifiers_harness import register

        cfg = vf.SingleAgentEnvConfig(
            taskset={"id": taskset, **dict(taskset_args)},
            # no max_turns for verifiers: steprl cuts the episode at its own max_turns and cancels it
            agent=vf.AgentConfig(runtime=vf.SubprocessConfig(), harness=vf.HarnessConfig(id=register())))
        self.env = vf.load_environment(cfg)
        self.tasks = list(self.env.taskset)
        self._held = HeldContext("steprl-verifiers", self._serving, timeout_s=START_TIMEOUT_S)
        self.base_url: str = self._held.value

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[str]:
        """The policy endpoint on a free local port, inside verifiers' serving context; yields the endpoint's URL."""
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # a free port, known before the site serves on it
        await web.SockSite(runner, sock).start()
        try:
            async with self.env.serving():
                yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        finally:
            await runner.cleanup()

    async def _handle(self, request: Any) -> Any:
        """A model request from verifiers: hand it to the env instance it names, answer with that instance's text."""
        from aiohttp import web

        body = await request.json()
        inbox = self.inboxes.get(str(body.get("model")))
        if inbox is None:
            return web.json_response({"error": {"message": f"no steprl env instance {body.get('model')!r}"}},
                                     status=404)
        reply: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.add(reply)
        inbox.put(("request", list(body.get("messages", [])), reply))
        try:
            text = await reply
        finally:
            self._pending.discard(reply)
        return web.json_response(completion(text, str(body.get("model"))))

    def new_inbox(self) -> tuple[str, queue.Queue]:
        """A name for a new env instance (the `model` its episodes' requests carry) and its queue of events."""
        name = f"steprl-policy-{next(self._names)}"
        self.inboxes[name] = inbox = queue.Queue()
        return name, inbox

    def start_episode(self, task: Any, name: str) -> Future:
        """Run verifiers' episode of `task` with the model `name`; a concurrent Future of its Episode."""
        vf = self.vf
        ctx = vf.ModelContext(model=name, client=vf.EvalClientConfig(base_url=self.base_url,
                                                                        api_key_var="STEPRL_NO_API_KEY"),
                              sampling=vf.SamplingConfig())
        return self._held.submit(self._run_episode(task, ctx))

    async def _run_episode(self, task: Any, ctx: Any) -> Any:
        me = asyncio.current_task()
        self._running.add(me)
        try:
            return await self.env.run_episode(task, ctx)
        finally:
            self._running.discard(me)

    def answer(self, reply: asyncio.Future, text: str) -> None:
        """Answer a pending model request with `text` (thread-safe)."""
        self._held.call_soon(lambda: reply.done() or reply.set_result(text))

    def drop(self, reply: asyncio.Future) -> None:
        """Abandon a pending model request (its episode was cancelled): its handler ends instead of waiting."""
        self._held.call_soon(reply.cancel)

    def alive(self) -> bool:
        """False once the serving context ended."""
        return not self._held.ended

    def close(self) -> None:
        """Cancel running episodes and wait for them, leave verifiers' serving context, stop the endpoint and loop."""
        async def cancel_episodes() -> None:
            for reply in list(self._pending):
                reply.cancel()
            episodes = list(self._running)
            for t in episodes:
                t.cancel()
            if episodes:
                await asyncio.wait(episodes, timeout=10)

        self._held.close(before=cancel_episodes)


class VerifiersEnv(gym.Env):
    """A verifiers environment as a steprl text env (see the module docstring for the kwargs)."""

    metadata = {"render_modes": []}

    def __init__(self, taskset: str, taskset_args: Mapping[str, Any] | None = None, max_turns: int = 4,
                 held_out_fraction: float = 0.2, split_seed: int = 0, success_reward: float = 1.0,
                 stop: Sequence[str] = ("</answer>",), turn_timeout_s: float = 600.0) -> None:
        if int(max_turns) < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if not (isinstance(taskset, str) and TASKSET_ID.match(taskset)):
            raise ValueError(f"taskset {taskset!r}: verifiers imports a taskset by its module name, a lowercase "
                             "top-level name such as my_tasks (put its folder on PYTHONPATH)")
        if not 0 <= held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
        self.max_turns, self.success_reward = int(max_turns), float(success_reward)
        self.stop, self.turn_timeout_s = [str(s) for s in stop], float(turn_timeout_s)
        self.observation_space, self.action_space = text_space(MAX_OBS_CHARS), text_space(MAX_ACTION_CHARS)
        args = dict(taskset_args or {})
        self.runtime: VerifiersRuntime = SHARED.get(resource_key("verifiers", taskset, args),
                                                    lambda: VerifiersRuntime(taskset, args))
        tasks = self.runtime.tasks
        if not tasks:
            raise ValueError(f"verifiers taskset {taskset!r} has no tasks")
        held = [held_out(split_seed, t.key, held_out_fraction) for t in tasks]
        self.train = [i for i, h in enumerate(held) if not h]
        self.held = [i for i, h in enumerate(held) if h]
        if not self.train or (held_out_fraction > 0 and not self.held):
            raise ValueError(f"verifiers taskset {taskset!r}: {len(tasks)} tasks leave an empty split at "
                             f"held_out_fraction {held_out_fraction}; add tasks or change the fraction")
        self.name, self.inbox = self.runtime.new_inbox()
        self._episode: Future | None = None
        self._reply: Any = None
        self._seen = 0
        self._counts: dict[str, Any] = {}

    def task_index(self, seed: int) -> int:
        """The task `reset(seed=seed)` plays: training tasks for training seeds, held-out ones for held-out seeds."""
        pool = self.held if seed >= HELD_OUT_SEEDS and self.held else self.train
        return pool[int(np.random.default_rng(int(seed)).integers(len(pool)))]

    def _cancel(self) -> None:
        if self._episode is not None and not self._episode.done():
            self._episode.cancel()
        if self._reply is not None:
            self.runtime.drop(self._reply)
        self._episode, self._reply = None, None
        while not self.inbox.empty():  # a cancelled episode's last events
            self.inbox.get_nowait()

    def _next(self) -> tuple[str, Any]:
        """The next event of this instance's episode: ("request", messages) or ("done", Episode)."""
        while True:
            try:
                kind, *rest = self.inbox.get(timeout=self.turn_timeout_s)
            except queue.Empty:  # load-dependent: a fault of the run (the micro-batch plays again), not an outcome
                self._cancel()
                raise ToolTimeout(f"verifiers episode sent nothing for {self.turn_timeout_s:g} s") from None
            if kind == "request" or rest[0] is self._episode:
                break  # (a cancelled episode's own end, arriving late, is skipped)
        if kind == "request":
            messages, self._reply = rest
            return kind, messages
        episode = rest[0]
        return kind, episode.result()

    def _info(self) -> dict[str, Any]:
        return {**self._counts, "format": "verifiers"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start verifiers' episode of the seed's task; returns once it first asks the model."""
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**63 - 1))
        self._cancel()
        task = self.runtime.tasks[self.task_index(int(seed))]
        self._episode = self.runtime.start_episode(task, self.name)
        self._episode.add_done_callback(lambda f, inbox=self.inbox: inbox.put(("done", f)))
        kind, messages = self._next()
        if kind != "request":
            raise RuntimeError(f"verifiers episode ended before asking the model: {self._failure(messages)}")
        system = "\n".join(content_text(m) for m in messages if m.get("role") == "system")
        obs = "\n".join(content_text(m) for m in messages if m.get("role") != "system")
        self._seen = len(messages)
        self._counts = {"tool_calls": 0, "tool_errors": 0, "malformed": 0, "success": False, "turn": 0}
        info = self._info()
        info.update(system=fit(system, MAX_OBS_CHARS), instructions=fit(system, MAX_OBS_CHARS), stop=self.stop,
                    tools=[], task=getattr(task.data, "id", None))
        return fit(obs, MAX_OBS_CHARS), info

    @staticmethod
    def _failure(episode: Any) -> str:
        errors = [getattr(e, "message", str(e)) for e in getattr(episode, "errors", ())]
        for trace in getattr(episode, "traces", ()):
            errors += [getattr(e, "message", str(e)) for e in getattr(trace, "errors", ())]
        return "; ".join(str(e)[:200] for e in errors) or "no error recorded"

    def step(self, action: Any):
        """Answer verifiers' pending request with the agent's text; return at its next request or at the end."""
        if self._reply is None:
            return "", 0.0, True, False, self._info()
        c = self._counts
        c["turn"] += 1
        self.runtime.answer(self._reply, str(action))
        self._reply = None
        kind, value = self._next()
        if kind == "done":
            traces = list(getattr(value, "traces", ()))
            if not traces or getattr(value, "errors", None):
                raise RuntimeError(f"verifiers episode failed: {self._failure(value)}")
            reward = float(traces[-1].reward or 0.0)
            c["success"] = reward >= self.success_reward
            self._episode = None
            return "", reward, True, False, self._info()
        new = value[self._seen + 1:]  # after the agent's reply: the env's answer (a user or tool message)
        self._seen = len(value)
        obs = fit("\n".join(content_text(m) for m in new), MAX_OBS_CHARS)
        truncated = c["turn"] >= self.max_turns
        if truncated:
            self._cancel()
        return obs, 0.0, False, truncated, self._info()

    def close(self) -> None:
        """Cancel a running episode (the shared runtime stays up for the process's other instances until exit)."""
        self._cancel()
        self.runtime.inboxes.pop(self.name, None)
