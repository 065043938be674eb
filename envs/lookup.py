"""steprl/Lookup-v0: multi-hop questions over a small generated table, answerable only with `lookup`."""

from __future__ import annotations

import numpy as np

from steprl.envs.base import ExpertStep, Task, ToolTaskEnv
from steprl.envs.protocol import ToolCall

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _word(rng: np.random.Generator, syllables: int) -> str:
    return "".join(
        _CONSONANTS[int(rng.integers(len(_CONSONANTS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))]
        for _ in range(syllables)
    )


def _distinct_words(rng: np.random.Generator, n: int, syllables: int, avoid: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = _word(rng, syllables)
        if w not in avoid and w not in out:
            out.append(w)
    return out


class LookupEnv(ToolTaskEnv):
    """Follow `boss` links through a hidden table, then read a field; tool: lookup (keys `name.field`).

    Each seed generates `people` invented names; every person has a `boss` (another person)
    and a `city` (an invented word). The question asks for the city of the boss of the boss
    ... of one person (`hops` lookups in all, default 2). Kwargs: `people` (default 6),
    `hops` (default 2), `format`, `max_turns` (default hops + 3), `format_penalty`.

    Rewards: 1.0 when the answer equals the city after stripping whitespace, else 0.0;
    `-format_penalty` for each malformed turn.
    """

    task_hint = "Keys are name.boss and name.city."

    def __init__(
        self,
        people: int = 6,
        hops: int = 2,
        format: str = "hermes",
        max_turns: int | None = None,
        format_penalty: float = 0.0,
        render_mode: str | None = None,
        instructions: bool = True,
    ) -> None:
        if not 2 <= int(people) <= 50:
            raise ValueError(f"people must be in 2..50, got {people}")
        if not 1 <= int(hops) <= 8:
            raise ValueError(f"hops must be in 1..8, got {hops}")
        self.people, self.hops = int(people), int(hops)
        super().__init__(
            format=format,
            max_turns=max_turns if max_turns is not None else self.hops + 3,
            format_penalty=format_penalty,
            render_mode=render_mode,
            instructions=instructions,
        )

    def make_task(self, rng: np.random.Generator) -> Task:
        """Names, bosses (never oneself) and cities; the question starts from a random person."""
        names = _distinct_words(rng, self.people, 2, set())
        cities = _distinct_words(rng, self.people, 3, set(names))
        table: dict[str, str] = {}
        for i, name in enumerate(names):
            boss = int(rng.integers(self.people - 1))
            table[f"{name}.boss"] = names[boss if boss < i else boss + 1]
            table[f"{name}.city"] = cities[int(rng.integers(len(cities)))]
        start = names[int(rng.integers(self.people))]
        keys, who = [], start
        for _ in range(self.hops - 1):
            keys.append(f"{who}.boss")
            who = table[keys[-1]]
        keys.append(f"{who}.city")
        question = "What is the city of " + "the boss of " * (self.hops - 1) + f"{start}?"
        return Task(
            question, table[keys[-1]], ("lookup",), {"table": table, "keys": tuple(keys), "cities": tuple(cities)}
        )

    def expert_turns(self, task: Task) -> list[ExpertStep]:
        """One lookup per hop, then the city."""
        steps = [ExpertStep(ToolCall("lookup", {"key": k})) for k in task.context["keys"]]
        return steps + [ExpertStep(answer=task.answer)]

    def guess_answer(self, task: Task, rng: np.random.Generator) -> str:
        """Another city from the same table: plausible, never right."""
        others = [c for c in task.context["cities"] if c != task.answer]
        return others[int(rng.integers(len(others)))]
