"""Task envs: registration, check_env, demonstrations, seeds, counts, truncation, never raising."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import steprl.envs
from steprl.envs.registry import steprl_env_ids
from steprl.envs.text import CHARSET

TASKS = ["steprl/Calculator-v0", "steprl/Lookup-v0", "steprl/Guess-v0"]
FORMATS = ["hermes", "compact"]


def in_charset(s: str) -> bool:
    return all(c in CHARSET for c in s)


DATA_ENVS = ["steprl/QA-v0", "steprl/ReasoningGym-v0"]
ECOSYSTEM_ENVS = ["steprl/OpenEnv-v0", "steprl/Verifiers-v0"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ecosystem"


def test_registered_ids_and_idempotent_registration() -> None:
    assert steprl_env_ids() == sorted(TASKS + DATA_ENVS + ECOSYSTEM_ENVS + ["steprl/Discrete-v0"])
    steprl.envs.register_all()
    assert steprl_env_ids() == sorted(TASKS + DATA_ENVS + ECOSYSTEM_ENVS + ["steprl/Discrete-v0"])


def _kwargs(env_id: str, tmp_path) -> dict:
    """What each data env needs to be built: a small question/answer file, a small reasoning-gym dataset."""
    if env_id == "steprl/QA-v0":
        path = tmp_path / "qa.jsonl"
        path.write_text("".join(json.dumps({"question": f"What is {i}+{i}?", "answer": str(2 * i)}) + "\n"
                                for i in range(20)))
        return {"path": str(path), "scorer": "numeric", "tools": ["calc"]}
    if env_id == "steprl/ReasoningGym-v0":
        return {"dataset": "basic_arithmetic", "size": 20}
    if env_id == "steprl/OpenEnv-v0":  # the README's example game (examples/ecosystem/guess_game.py)
        return {"env": "guess_game:GuessEnvironment"}
    if env_id == "steprl/Verifiers-v0":  # its answer format is the taskset's, so it takes no `format`
        return {"taskset": "sums_tasks"}
    return {}


@pytest.mark.parametrize("env_id", sorted(steprl.envs.ENVS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_check_env_every_registered_env(env_id: str, fmt: str, tmp_path, monkeypatch) -> None:
    if env_id in ECOSYSTEM_ENVS:
        monkeypatch.syspath_prepend(str(EXAMPLES))
    fmt_kwarg = {} if env_id == "steprl/Verifiers-v0" else {"format": fmt}
    env = gym.make(env_id, **fmt_kwarg, **_kwargs(env_id, tmp_path))
    check_env(env if env_id == "steprl/Discrete-v0" else env.unwrapped)


@pytest.mark.parametrize("env_id", TASKS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_reset_contract(env_id: str, fmt: str) -> None:
    env = gym.make(env_id, format=fmt)
    obs, info = env.reset(seed=5)
    assert isinstance(obs, str) and obs and in_charset(obs)
    assert info["format"] == fmt and in_charset(info["system"])
    stops = ["</tool_call>", "</answer>"] if fmt == "hermes" else ["</call>", "</answer>"]
    assert info["stop"] == stops
    if fmt == "compact":
        assert len(info["system"]) <= 130, info["system"]
    assert {k: info[k] for k in ("tool_calls", "tool_errors", "malformed", "success", "turn")} == {
        "tool_calls": 0, "tool_errors": 0, "malformed": 0, "success": False, "turn": 0}


@pytest.mark.parametrize("env_id", TASKS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_demonstrations_solve_50_seeds(env_id: str, fmt: str) -> None:
    env = gym.make(env_id, format=fmt).unwrapped
    stops = tuple(env.protocol.stop_strings)
    for seed in range(50):
        demo = env.demonstration(seed)
        assert all(t.endswith(stops) and in_charset(t) for t in demo)
        env.reset(seed=seed)
        for i, turn in enumerate(demo):
            obs, reward, terminated, truncated, info = env.step(turn)
            assert not truncated
            assert terminated == (i == len(demo) - 1)
        assert reward == 1.0 and info["success"] is True
        assert info["tool_calls"] == len(demo) - 1 and info["tool_errors"] == 0 and info["malformed"] == 0


@pytest.mark.parametrize(
    "kwargs", [{"digits": 6, "ops": 2, "steps": 3}, {"digits": 3, "ops": 1, "steps": 2, "operators": "+-*/"}]
)
def test_multistep_calculator_demos(kwargs: dict) -> None:
    env = gym.make("steprl/Calculator-v0", format="compact", **kwargs).unwrapped
    for seed in range(50):
        demo = env.demonstration(seed)
        assert len(demo) == kwargs["steps"] + 1
        env.reset(seed=seed)
        for turn in demo:
            _, reward, terminated, truncated, info = env.step(turn)
        assert terminated and reward == 1.0


@pytest.mark.parametrize("env_id", TASKS)
def test_imperfect_demos_mostly_fail(env_id: str) -> None:
    env = gym.make(env_id, format="compact").unwrapped
    rewards = []
    for seed in range(50):
        demo = env.demonstration(seed, imperfect_rate=1.0)
        assert len(demo) == 1 and demo[0].startswith("<answer>")  # no tool call
        env.reset(seed=seed)
        rewards.append(env.step(demo[0])[1])
    assert sum(rewards) == 0.0  # imperfect answers are plausible but wrong


def test_imperfect_rate_is_a_fraction_and_deterministic() -> None:
    env = gym.make("steprl/Calculator-v0").unwrapped
    n = sum(len(env.demonstration(s, imperfect_rate=0.3)) == 1 for s in range(200))
    assert 40 <= n <= 80
    assert [env.demonstration(s, 0.3) for s in range(20)] == [env.demonstration(s, 0.3) for s in range(20)]


def test_calculator_numbers() -> None:
    env = gym.make("steprl/Calculator-v0", format="compact", digits=5).unwrapped
    obs, _ = env.reset(seed=0)
    task = env.task_for_seed(0)
    assert obs == task.question and obs.startswith("What is ")
    expr = obs[len("What is "):-1]
    a, b = expr.replace("+", " ").replace("-", " ").replace("*", " ").split()
    assert len(a) == 5 and len(b) == 5
    assert env.step(f"<call>calc {expr}</call>")[0] == f"<result>{task.answer}</result>"
    assert env.step(f"<answer> {task.answer}\n</answer>")[1:3] == (1.0, True)


def test_truncation_counts_and_format_penalty() -> None:
    env = gym.make("steprl/Calculator-v0", format="compact", max_turns=4, format_penalty=0.1).unwrapped
    env.reset(seed=1)
    out = env.step("no tags here")
    assert out[:4] == ("<result>error: no tool call or answer</result>", -0.1, False, False)
    out = env.step("<call>calc 1/0</call>")
    assert out[0] == "<result>error: division by zero</result>" and out[1] == 0.0
    out = env.step("<call>rm -rf</call>")
    assert out[0].startswith("<result>error: unknown tool rm; use calc")
    obs, reward, terminated, truncated, info = env.step("<call>calc 2+2</call>")
    assert obs == "<result>4</result>" and not terminated and truncated
    assert info == {"tool_calls": 3, "tool_errors": 2, "malformed": 1, "success": False, "turn": 4, "format": "compact"}
    # stepping after the end is inert, not an exception
    assert env.step("<answer>1</answer>")[1] == 0.0


def test_wrong_answer_scores_zero() -> None:
    env = gym.make("steprl/Lookup-v0").unwrapped
    env.reset(seed=3)
    _, reward, terminated, truncated, info = env.step("<answer>paris</answer>")
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, False)


def test_guess_needs_feedback() -> None:
    env = gym.make("steprl/Guess-v0", format="compact", high=100).unwrapped
    assert env.max_turns == 9
    secret = env.task_for_seed(0).context["secret"]
    env.reset(seed=0)
    probe = 1 if secret != 1 else 2
    obs = env.step(f"<call>guess {probe}</call>")[0]
    assert obs == ("<result>higher</result>" if secret > probe else "<result>lower</result>")
    assert max(len(env.demonstration(s)) for s in range(50)) <= 8


@pytest.mark.parametrize("env_id", TASKS)
@settings(max_examples=60, deadline=None)
@given(
    turns=st.lists(
        st.one_of(
            st.text(max_size=300),
            st.sampled_from(
                [
                    "<answer>",
                    "<call>calc 9**9**9</call>",
                    '<tool_call>{"name": "lookup", "arguments": {"key": []}}</tool_call>',
                    "<call>guess 1e9</call>",
                    '<tool_call>{"name": "calc", "arguments": {"expression": "__import__(\'os\')"}}</tool_call>',
                    "<call>lookup </call>",
                    "<call>guess -99999999999999999999999999999999999999999999</call>",
                ]
            ),
        ),
        max_size=8,
    )
)
def test_env_never_raises(env_id: str, turns: list[str]) -> None:
    for fmt in FORMATS:
        env = gym.make(env_id, format=fmt).unwrapped
        env.reset(seed=0)
        for t in turns:
            obs, reward, terminated, truncated, info = env.step(t)
            assert isinstance(obs, str) and in_charset(obs) and env.observation_space.contains(obs)
            assert -1.0 <= reward <= 1.0
            if terminated or truncated:
                break


_CHILD = """
import json, gymnasium as gym, steprl.envs
out = {}
for env_id in %r:
    env = gym.make(env_id, format="compact").unwrapped
    obs, info = env.reset(seed=123)
    out[env_id] = [obs, info["system"], env.demonstration(123), env.demonstration(9, 0.5)]
print(json.dumps(out))
"""


def test_same_seed_same_episode_across_processes() -> None:
    res = subprocess.run([sys.executable, "-c", _CHILD % (TASKS,)], capture_output=True, text=True, timeout=60,
                         env={"PYTHONHASHSEED": "random", "PATH": ""})
    assert res.returncode == 0, res.stderr
    child = json.loads(res.stdout)
    for env_id in TASKS:
        env = gym.make(env_id, format="compact").unwrapped
        obs, info = env.reset(seed=123)
        assert child[env_id] == [obs, info["system"], env.demonstration(123), env.demonstration(9, 0.5)]
