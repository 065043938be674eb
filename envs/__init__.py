"""steprl.envs: text environments for tool-using agents, registered with Gymnasium on import.

Ids (`steprl/<Name>-v0`): Calculator, Lookup, Guess (task envs with tools and expert
demonstrations), Discrete (any Discrete-action Gymnasium env as text; kwarg `env_id`), QA (your
own question/answer file), ReasoningGym (a reasoning-gym dataset), OpenEnv (an OpenEnv environment)
and Verifiers (a verifiers environment).
"""

from __future__ import annotations

import gymnasium as gym

from steprl.envs.adapters import DiscreteToText, QAEnv, reasoning_gym_env
from steprl.envs.base import ExpertStep, Task, ToolTaskEnv
from steprl.envs.calculator import CalculatorEnv
from steprl.envs.guess import GuessEnv
from steprl.envs.lookup import LookupEnv
from steprl.envs.protocol import Answer, Malformed, Protocol, ToolCall, get_protocol
from steprl.envs.tools import Tool, ToolResult, ToolTimeout, get_tool, register_tool, run_tool, run_with_timeout

#: id -> (entry point, one-line description); the registry `steprl envs` lists.
ENVS: dict[str, tuple[str, str]] = {
    "steprl/Calculator-v0": (
        "steprl.envs.calculator:CalculatorEnv",
        "Exact arithmetic on long operands with the calc tool (kwargs digits, ops, steps).",
    ),
    "steprl/Lookup-v0": (
        "steprl.envs.lookup:LookupEnv",
        "Multi-hop questions over a hidden generated table with the lookup tool (kwargs people, hops).",
    ),
    "steprl/Guess-v0": (
        "steprl.envs.guess:GuessEnv",
        "Find a hidden number with higher/lower replies from the guess tool (kwarg high).",
    ),
    "steprl/Discrete-v0": (
        "steprl.envs.adapters:make_discrete",
        "Any Discrete-action Gymnasium env as text (kwarg env_id, default FrozenLake-v1).",
    ),
    "steprl/QA-v0": (
        "steprl.envs.qa_file:QAFileEnv",
        "Question/answer items from a JSONL or Parquet file (kwargs path, question_field, answer_field, scorer, "
        "tools, held_out_fraction).",
    ),
    "steprl/OpenEnv-v0": (
        "steprl.envs.openenv_env:OpenEnvEnv",
        "An OpenEnv environment, in-process, on a local server or at a URL (kwargs env or url, serve, task; needs "
        "the extra steprl[openenv]).",
    ),
    "steprl/Verifiers-v0": (
        "steprl.envs.verifiers_env:VerifiersEnv",
        "A verifiers (v1) taskset and env, steprl's policy as the model (kwargs taskset, max_turns, "
        "held_out_fraction; needs the extra steprl[verifiers]).",
    ),
    "steprl/ReasoningGym-v0": (
        "steprl.envs.qa_file:make_reasoning_gym",
        "A reasoning-gym dataset (kwargs dataset, size; needs the extra steprl[reasoning]).",
    ),
}


def register_all() -> None:
    """Register every id in ENVS with Gymnasium (idempotent: already registered ids are skipped)."""
    for env_id, (entry_point, _) in ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=True)


register_all()

__all__ = [
    "Answer",
    "CalculatorEnv",
    "DiscreteToText",
    "ENVS",
    "ExpertStep",
    "GuessEnv",
    "LookupEnv",
    "Malformed",
    "Protocol",
    "QAEnv",
    "Task",
    "Tool",
    "ToolCall",
    "ToolResult",
    "ToolTaskEnv",
    "ToolTimeout",
    "get_protocol",
    "get_tool",
    "reasoning_gym_env",
    "register_all",
    "register_tool",
    "run_tool",
    "run_with_timeout",
]
