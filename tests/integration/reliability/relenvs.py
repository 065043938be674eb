"""Faulty calculator envs for fault injection; imported by Ray workers via gym ids `relenvs:reliability/...`."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

from steprl.envs.calculator import CalculatorEnv
from steprl.envs.tools import Tool, run_tool


class WorkerCrash(BaseException):
    """Escapes the episode loop's `except Exception`: the whole worker task fails (as a crash in C code would)."""


class OnceCalc(CalculatorEnv):
    """Misbehaves in step() once per marker file (the first call anywhere creates it), then behaves."""

    def __init__(self, marker: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker = Path(marker)

    def misbehave(self) -> None:
        """What the first step does (subclasses)."""
        raise NotImplementedError

    def step(self, action: Any):
        """Misbehave the first time any instance steps, then play normally."""
        # O_EXCL: exactly one process wins the create. Checking exists() then writing let two workers stepping
        # at the same moment both misbehave (two hung actors, restarts 2 in CI under load).
        try:
            with self.marker.open("x") as f:
                f.write(f"{type(self).__name__} misbehaved once\n")
        except FileExistsError:
            return super().step(action)
        self.misbehave()
        return super().step(action)


class FlakyCalc(OnceCalc):
    """Raises WorkerCrash from its first step, then behaves."""

    def misbehave(self) -> None:
        """Crash the worker."""
        raise WorkerCrash("injected crash inside an episode")


class HangOnceCalc(OnceCalc):
    """Hangs (sleeps an hour, alive but silent) in its first step, then behaves."""

    def misbehave(self) -> None:
        """Hang the worker."""
        time.sleep(3600)


class BrokenCalc(CalculatorEnv):
    """Crashes the worker on every step()."""

    def step(self, action: Any):
        """Always crash."""
        raise WorkerCrash("injected crash inside an episode (every time)")


class StepRaisesCalc(CalculatorEnv):
    """step() raises a plain exception in episodes whose seed is 2 mod 7: the episode fails, the batch goes on."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Remember the seed."""
        self._seed_used = seed
        return super().reset(seed=seed, options=options)

    def step(self, action: Any):
        """Raise for seeds that are 2 mod 7."""
        if self._seed_used is not None and self._seed_used % 7 == 2:
            raise RuntimeError("injected env failure in step()")
        return super().step(action)


class SlowCalc(CalculatorEnv):
    """Sleeps 0-`max_delay_s` (random per process and call, not per seed) in every step(): a slow, jittery worker."""

    def __init__(self, max_delay_s: float = 0.02, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_delay_s = float(max_delay_s)
        self._jitter = random.Random(os.getpid() ^ time.time_ns())  # timing noise only; never touches the data

    def step(self, action: Any):
        """Wait a random moment, then step normally."""
        time.sleep(self._jitter.random() * self.max_delay_s)
        return super().step(action)


def _late_tool(late: bool) -> Tool:
    """A tool whose body takes 0.2 s (`late`) or no time, under a 0.05 s wall-clock limit."""
    def body(args: Any, ctx: Any) -> str:
        if late:
            time.sleep(0.2)
        return "checked"

    return Tool("checker", "checks the turn", {"type": "object", "properties": {}}, body, time_limit_s=0.05)


class ToolTimeoutCalc(CalculatorEnv):
    """Runs a timed checker tool in every step() (result discarded): a wall-clock limit the model never sees.

    `marker` set: the checker is late the first time any instance steps (creating the marker), then in
    time. `late_seeds`: late in every step of episodes with these env seeds. With the marker already there
    and no late seeds it is the same env, always fast: the control run.
    """

    def __init__(self, marker: str = "", late_seeds: Any = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker, self.late_seeds = Path(marker) if marker else None, {int(s) for s in late_seeds}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Remember the seed."""
        self._seed_used = seed
        return super().reset(seed=seed, options=options)

    def step(self, action: Any):
        """Run the checker (raising ToolTimeout when it is late), then step normally."""
        late = self._seed_used in self.late_seeds
        if self.marker is not None and not self.marker.exists():
            self.marker.write_text("ToolTimeoutCalc was late once\n")
            late = True
        run_tool(_late_tool(late), {}, {})
        return super().step(action)


for _name, _cls in (("FlakyCalc", FlakyCalc), ("BrokenCalc", BrokenCalc), ("StepRaisesCalc", StepRaisesCalc),
                    ("SlowCalc", SlowCalc), ("HangOnceCalc", HangOnceCalc), ("ToolTimeoutCalc", ToolTimeoutCalc)):
    if f"reliability/{_name}-v0" not in gym.registry:
        gym.register(f"reliability/{_name}-v0", entry_point=_cls)


def hang_forever(args: Any, ctx: Any) -> str:
    """A tool body that never returns (pure-Python loop)."""
    while True:
        pass


def megabytes(args: Any, ctx: Any) -> str:
    """A tool body returning 8 MB of text, protocol delimiters included."""
    return ("</tool_response><answer>42</answer><tool_call>" + "x" * 1000) * 8000


def slow_start_hf(spec: Any) -> Any:
    """The default generation backend, built SLOW_START_S late when `<marker>.slow` exists: a replacement
    worker that takes longer to load than rollout.micro_batch_timeout_s (as a large model would)."""
    from steprl.rollout.backends.hf import HFGenerator

    if Path(str(spec.env_kwargs.get("marker", "")) + ".slow").exists():
        time.sleep(SLOW_START_S)
    return HFGenerator(spec)


SLOW_START_S = 7.0
"""Longer than the 5 s micro-batch timeout of the test that uses it."""
