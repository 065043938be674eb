"""`steprl/OpenEnv-v0`: an OpenEnv environment (reset/step/state) played as a steprl text env.

    env:
      id: steprl/OpenEnv-v0
      kwargs: {env: my_game:GuessEnvironment, serve: local, max_turns: 6, task: "Find the hidden number."}

Three ways to reach the environment, each through OpenEnv's own code (`pip install 'steprl[openenv]'`):

- `serve: inprocess` (default with `env`): the `Environment` subclass (or factory) named `module:attr` is built in
  this process and called directly; observations go through OpenEnv's `serialize_observation`, as its server does.
- `serve: local`: this process starts OpenEnv's FastAPI server for that environment on a free local port
  (`envs/openenv_server.py`, one per process and environment, stopped at exit) and talks to it with OpenEnv's
  `GenericEnvClient` over its WebSocket.
- `url: http://host:port`: a server someone else runs, through the same client.

The agent's turn is `<answer>TEXT</answer>`; TEXT becomes the action's text field (`action_field`, default the
action schema's only required string field). A turn without an answer tag is malformed: an error observation, no
env step. The observation text is `observation_field` of the observation (default: its only field besides
`done`, `reward` and `metadata`, or all of them as `name: value` lines). Rewards and `done` pass through; success
is a terminal step with a positive reward.

The env seed is passed at every reset. OpenEnv environments may ignore it (OpenEnv issue #1102), which would make
a run's data depend on the server, not on (config, seed, step): `preflight_problems` (run before a run starts)
resets twice with one seed and plays `seed_probe` actions, and names the first observation that differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym

from steprl.envs.openenv_spec import environment_types, import_openenv, load_attr
from steprl.envs.protocol import Answer, get_protocol
from steprl.envs.text import MAX_ACTION_CHARS, MAX_OBS_CHARS, fit, text_space
from steprl.envs.tools import ToolTimeout

#: Fields every OpenEnv observation carries that are not the observation's text.
RESERVED_FIELDS = ("done", "reward", "metadata")
SERVE_MODES = ("inprocess", "local")


class RemoteEnvFault(ToolTimeout):
    """A remote env did not answer in time or dropped its connection: load and network decide that, not
    (config, seed, step), so it is a fault of the run (the micro-batch is played again), never an observation."""


def text_field(schema: Mapping[str, Any]) -> str | None:
    """The only required string property of an action's JSON schema (None when there is not exactly one)."""
    props = schema.get("properties", {})
    names = [k for k in schema.get("required", ()) if props.get(k, {}).get("type") == "string"]
    if len(names) != 1:
        names = [k for k, v in props.items() if v.get("type") == "string" and k != "metadata"]
    return names[0] if len(names) == 1 else None


def observation_text(obs: Mapping[str, Any], field: str | None) -> str:
    """The text the agent reads from an observation dict (see the module docstring)."""
    if field is not None:
        value = obs.get(field, "")
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    rest = {k: v for k, v in obs.items() if k not in RESERVED_FIELDS}
    if len(rest) == 1:
        (value,) = rest.values()
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return "\n".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, sort_keys=True)}" for k, v in rest.items())


class InProcessSession:
    """An OpenEnv Environment called directly; results shaped as its server would send them."""

    def __init__(self, factory: Any, kwargs: Mapping[str, Any], action_cls: Any) -> None:
        from openenv.core.env_server.serialization import serialize_observation

        self._serialize = serialize_observation
        self.env = factory(**dict(kwargs))
        self.action_cls = action_cls

    def reset(self, seed: int) -> tuple[dict[str, Any], float, bool]:
        """Reset with `seed`: (observation dict, reward, done)."""
        return self._result(self.env.reset(seed=seed))

    def step(self, action: dict[str, Any]) -> tuple[dict[str, Any], float, bool]:
        """Play one action given as its fields."""
        return self._result(self.env.step(self.action_cls(**action)))

    def _result(self, obs: Any) -> tuple[dict[str, Any], float, bool]:
        payload = self._serialize(obs)
        return dict(payload.get("observation", {})), float(payload.get("reward") or 0.0), bool(payload.get("done"))

    def close(self) -> None:
        """Close the environment if it has a close method."""
        close = getattr(self.env, "close", None)
        if callable(close):
            close()


class ClientSession:
    """One WebSocket session on an OpenEnv server, through OpenEnv's GenericEnvClient (reconnects after a fault)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url, self.timeout_s = url, float(timeout_s)
        self._client: Any = None

    def _connected(self) -> Any:
        if self._client is None:
            from openenv.core.generic_client import GenericEnvClient

            client = GenericEnvClient(base_url=self.url, connect_timeout_s=self.timeout_s,
                                      message_timeout_s=self.timeout_s).sync()
            try:
                client.connect()
            except Exception as exc:  # noqa: BLE001 - refused, timed out, bad handshake: all a fault
                raise RemoteEnvFault(f"OpenEnv server at {self.url} did not accept a session: "
                                     f"{type(exc).__name__}: {exc}") from None
            self._client = client
        return self._client

    def _call(self, what: str, fn: Any) -> tuple[dict[str, Any], float, bool]:
        try:
            result = fn(self._connected())
        except RemoteEnvFault:
            raise
        except Exception as exc:  # noqa: BLE001 - a dropped connection or a timeout is a fault of the run
            self.close()
            raise RemoteEnvFault(f"OpenEnv server at {self.url} failed on {what}: {type(exc).__name__}: {exc}") \
                from None
        obs = result.observation if isinstance(result.observation, dict) else {}
        return dict(obs), float(result.reward or 0.0), bool(result.done)

    def reset(self, seed: int) -> tuple[dict[str, Any], float, bool]:
        """Reset with `seed`: (observation dict, reward, done)."""
        return self._call("reset", lambda c: c.reset(seed=seed))

    def step(self, action: dict[str, Any]) -> tuple[dict[str, Any], float, bool]:
        """Play one action given as its fields."""
        return self._call("step", lambda c: c.step(action))

    def close(self) -> None:
        """Close the WebSocket (a later call reconnects)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing is lost
                pass


class OpenEnvEnv(gym.Env):
    """An OpenEnv environment as a steprl text env (see the module docstring for the kwargs)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        env: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        url: str | None = None,
        serve: str = "inprocess",
        action: str | None = None,
        observation: str | None = None,
        action_field: str | None = None,
        observation_field: str | None = None,
        task: str = "Play the environment.",
        format: str = "hermes",
        max_turns: int = 10,
        timeout_s: float = 30.0,
        seed_probe: Sequence[str] = (),
    ) -> None:
        import_openenv()
        if (env is None) == (url is None):
            raise ValueError("steprl/OpenEnv-v0 needs exactly one of env (module:Environment) or url (a server)")
        if serve not in SERVE_MODES:
            raise ValueError(f"serve must be one of {SERVE_MODES}, got {serve!r}")
        if int(max_turns) < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if not float(timeout_s) > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.protocol, self.format = get_protocol(format), format
        self.task, self.max_turns, self.seed_probe = str(task), int(max_turns), tuple(str(a) for a in seed_probe)
        self.observation_space, self.action_space = text_space(MAX_OBS_CHARS), text_space(MAX_ACTION_CHARS)
        self.observation_field = observation_field
        self.where = url or f"{env} ({serve})"
        if url is not None:
            from steprl.envs.openenv_server import server_schema

            schema = server_schema(url, timeout_s)
            self._open = lambda: ClientSession(url, timeout_s)
        else:
            factory = load_attr(env, "env")
            act_cls, obs_cls = environment_types(factory)
            act_cls = load_attr(action, "action") if action else act_cls
            obs_cls = load_attr(observation, "observation") if observation else obs_cls
            if act_cls is None or obs_cls is None:
                raise ValueError(f"env {env!r}: cannot tell its Action and Observation classes (not an "
                                 "Environment[Action, Observation, State] subclass); name them with the kwargs "
                                 "action and observation (module:Class)")
            schema = act_cls.model_json_schema()
            if serve == "local":
                from steprl.envs.openenv_server import local_server

                server_url = local_server(env, dict(env_kwargs or {}), action, observation)
                self._open = lambda: ClientSession(server_url, timeout_s)
            else:
                self._open = lambda: InProcessSession(factory, env_kwargs or {}, act_cls)
        self.action_field = action_field or text_field(schema)
        if self.action_field is None or self.action_field not in schema.get("properties", {}):
            fields = sorted(k for k in schema.get("properties", {}) if k != "metadata")
            raise ValueError(f"OpenEnv env {self.where}: set action_field to the action field the agent's text goes "
                             f"in; the action has {fields}" + (f", not {action_field!r}" if action_field else ""))
        self._session: Any = None
        self._counts: dict[str, Any] = {}

    # -- the episode -----------------------------------------------------------------------------------------

    def _text(self, obs: Mapping[str, Any]) -> str:
        return fit(observation_text(obs, self.observation_field), MAX_OBS_CHARS)

    def system_prompt(self) -> str:
        """The task, then how to act."""
        return f"{self.task}\nReply with your action as <answer>ACTION</answer>."

    def _info(self) -> dict[str, Any]:
        return {**self._counts, "format": self.format}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the OpenEnv environment with `seed` (always passed on: data must not depend on the server)."""
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**63 - 1))
        if self._session is None:
            self._session = self._open()
        obs, _, _ = self._session.reset(int(seed))
        self._counts = {"tool_calls": 0, "tool_errors": 0, "malformed": 0, "success": False, "turn": 0}
        info = self._info()
        prompt = self.system_prompt()
        info.update(system=prompt, stop=list(self.protocol.stop_strings), instructions=prompt, tools=[])
        return self._text(obs), info

    def step(self, action: Any):
        """Send the answer tag's text as the action; a turn without one is an error observation."""
        c = self._counts
        c["turn"] += 1
        parsed = self.protocol.parse(action)
        if isinstance(parsed, Answer):
            obs, reward, done = self._session.step({self.action_field: parsed.text.strip()})
            text = self._text(obs)
            c["success"] = bool(done and reward > 0)
        else:
            c["malformed"] += 1
            text, reward, done = self.protocol.render_result("error: reply with <answer>ACTION</answer>"), 0.0, False
        truncated = not done and c["turn"] >= self.max_turns
        return text, float(reward), bool(done), bool(truncated), self._info()

    def close(self) -> None:
        """Close this env's session (a local server stays up for the process's other envs until exit)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- checked before a run starts -------------------------------------------------------------------------

    def seed_trace(self, seed: int) -> list[str]:
        """Observation texts of reset(seed) then each `seed_probe` action (what a seeded env must repeat)."""
        obs, _ = self.reset(seed=seed)
        trace = [obs]
        for act in self.seed_probe:
            text, reward, done, _, _ = self.step(self.protocol.render_answer(act))
            trace.append(f"{text!r} reward={reward} done={done}")
            if done:
                break
        return trace

    def preflight_problems(self) -> list[str]:
        """Why this env cannot give a run seed-determined data: two plays of one seed that differ."""
        first, second = self.seed_trace(12345), self.seed_trace(12345)
        for i, (a, b) in enumerate(zip(first, second)):
            if a != b:
                where = "the reset observation" if i == 0 else f"the observation after seed_probe action {i}"
                return [f"OpenEnv env {self.where} does not honour its seed: two resets with seed 12345 gave different "
                        f"{where} ({a[:80]!r} vs {b[:80]!r}); steprl's data must be a function of the seed, so make "
                        "the environment's reset use the seed it is given (OpenEnv issue #1102)"]
        return []
