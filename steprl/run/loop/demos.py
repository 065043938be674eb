"""Expert demonstrations as token sequences for warm-up SFT, a pure function of (seed, step, slot).

Each demonstration is played through its env (reset by seed, then each expert turn stepped),
and encoded with the agent's turn format exactly as a rollout would see it, so warm-up
trains on the same token layout the sampler produces. Loss mask: agent turns only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from steprl.rollout.episode import prompt_args
from steprl.rollout.plan import HALF
from steprl.rollout.seeding import derive

Example = tuple[list[int], list[int]]


def demo_example(env: Any, turn_format: Any, seed: int, imperfect_rate: float) -> Example:
    """(token ids, action mask) of the expert episode for env seed `seed`."""
    obs0, info = env.reset(seed=seed)
    turns = env.unwrapped.demonstration(seed, imperfect_rate=imperfect_rate)
    observations = []
    for t in turns[:-1]:
        obs, _r, term, trunc, _i = env.step(t)
        observations.append(obs)
        if term or trunc:
            break
    turns = turns[: len(observations) + 1]
    system, tools = prompt_args(info, turn_format)
    return turn_format.encode_demo(system, obs0, turns, observations, tools)


def demo_batches(env_id: str, env_kwargs: dict[str, Any], turn_format: Any, seed: int, batch_size: int,
                 imperfect_rate: float) -> Callable[[int], list[Example]]:
    """A function step -> that step's demonstrations; env seeds from derive(seed, 'warmup', step, slot)."""
    env = gym.make(env_id, **env_kwargs)

    def batch_for_step(step: int) -> list[Example]:
        return [
            demo_example(env, turn_format, derive(seed, "warmup", step, j) % HALF, imperfect_rate)
            for j in range(batch_size)
        ]

    return batch_for_step


class DemoMemo:
    """Demonstration batches already built in this run, stored compactly (numpy), for a second warm-up.

    The distillation student warms up on exactly the teacher's demonstrations (same seed, batch size and
    imperfect rate), so rebuilding them (env resets, tokenization: ~10 ms a batch) is pure waste. `key`
    names what the batches depend on; a different key clears the memo.
    """

    def __init__(self) -> None:
        """An empty memo."""
        self.key: tuple | None = None
        self.batches: list[list[tuple[Any, Any]]] = []

    def wrap(self, key: tuple, build: Callable[[int], list[Example]]) -> Callable[[int], list[Example]]:
        """`build` with memoisation: remembered steps are decoded, new consecutive steps remembered."""
        import numpy as np

        if key != self.key:
            self.key, self.batches = key, []

        def batch(step: int) -> list[Example]:
            if step < len(self.batches):
                return [(ids.tolist(), mask.tolist()) for ids, mask in self.batches[step]]
            out = build(step)
            if step == len(self.batches):
                self.batches.append([(np.asarray(i, dtype=np.int32), np.asarray(m, dtype=np.int8)) for i, m in out])
            return out

        return batch
