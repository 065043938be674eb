"""A verifiers (v1) taskset: two-digit sums, rewarded when the answer tag holds the sum; the env gives the agent a
second try after a wrong answer (multi-turn where the env is). steprl plays it as `steprl/Verifiers-v0`.

verifiers loads a taskset by module name and takes the one Taskset (and the one Env) this module exports.
"""

import json
import re
from pathlib import Path

import verifiers.v1 as vf

ITEMS = Path(__file__).with_name("sums.jsonl")


def answer_of(text):
    """The text inside <answer>...</answer>, or None."""
    m = re.search(r"<answer>\s*(.*?)\s*</answer>", text or "", re.S)
    return m.group(1) if m else None


class SumData(vf.TaskData):
    """A question and its gold answer."""

    answer: str


class SumTask(vf.Task[SumData, vf.State, vf.TaskConfig]):
    """Reward 1 when the last reply's answer is the sum."""

    @vf.reward(weight=1.0)
    async def correct(self, task: SumData, trace: vf.Trace) -> float:
        return float(answer_of(trace.last_reply) == task.answer)


class SumTaskset(vf.Taskset[SumTask, vf.TasksetConfig]):
    """The items of sums.jsonl, in file order."""

    def load(self):
        for i, line in enumerate(ITEMS.read_text().splitlines()):
            item = json.loads(line)
            data = SumData(id=f"sum-{i}", prompt=item["question"], answer=item["answer"],
                           system_prompt="Add the numbers. Answer: <answer>X</answer>")
            yield SumTask(data, self.config.task)


class SecondTryEnv(vf.Env[vf.SingleAgentEnvConfig]):
    """One more turn after a wrong answer."""

    async def run(self, task, agents):
        async with agents.agent.interaction(task) as it:
            trace = await it.turn()
            if answer_of(trace.last_reply) != task.data.answer:
                await it.turn("Wrong. Try again.")


__all__ = ["SecondTryEnv", "SumTaskset"]
