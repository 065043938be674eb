"""Adapters: DiscreteToText (FrozenLake), QAEnv, and the optional reasoning-gym adapter."""

from __future__ import annotations

import sys
import types

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from steprl.envs.adapters import DiscreteToText, QAEnv, exact_match, reasoning_gym_env, render_value
from steprl.envs.text import CHARSET


def test_check_env_discrete_frozenlake() -> None:
    check_env(DiscreteToText(gym.make("FrozenLake-v1")))


def test_discrete_actions_by_name_number_and_answer() -> None:
    env = DiscreteToText(gym.make("FrozenLake-v1", is_slippery=False), format="compact")
    obs, info = env.reset(seed=0)
    assert obs == "observation: 0"
    assert info["system"] == "Reply with one action as <answer>ACTION</answer>. Actions: 0 left, 1 down, 2 right, 3 up."
    assert info["stop"] == ["</call>", "</answer>"]
    assert env.step("<answer>RIGHT</answer>")[0] == "observation: 1"
    assert env.step(" 1 ")[0] == "observation: 5"  # hole at 5
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("jump")
    assert obs == "<result>error: no valid action</result>\nobservation: 0"
    assert (reward, terminated, truncated, info["malformed"], info["turn"]) == (0.0, False, False, 1, 1)


def test_discrete_solves_frozenlake_and_passes_reward() -> None:
    env = DiscreteToText(gym.make("FrozenLake-v1", is_slippery=False))
    env.reset(seed=0)
    for a in ["down", "down", "right", "right", "down"]:
        env.step(f"<answer>{a}</answer>")
    obs, reward, terminated, truncated, info = env.step("<answer>right</answer>")
    assert (reward, terminated, info["success"]) == (1.0, True, True)


def test_registered_discrete_uses_ansi_render_with_position() -> None:
    env = gym.make("steprl/Discrete-v0", is_slippery=False)
    obs, _ = env.reset(seed=0)
    assert obs == "[S]FFF\nFHFH\nFFFH\nHFFG"
    obs = env.step("2")[0]
    assert obs == "  (Right)\nS[F]FF\nFHFH\nFFFH\nHFFG"
    assert all(c in CHARSET for c in obs)


def test_discrete_max_turns_and_seed_passthrough() -> None:
    env = DiscreteToText(gym.make("FrozenLake-v1"), max_turns=3)
    env.reset(seed=0)
    outs = [env.step("?") for _ in range(3)]
    assert [o[3] for o in outs] == [False, False, True]
    a = DiscreteToText(gym.make("CartPole-v1"))
    b = DiscreteToText(gym.make("CartPole-v1"))
    assert a.reset(seed=7)[0] == b.reset(seed=7)[0]
    assert a.reset(seed=8)[0] != b.reset(seed=7)[0]
    a.reset(seed=7)
    assert a.step("left")[0] == b.step("0")[0]


def test_discrete_rejects_non_discrete_and_bad_names() -> None:
    with pytest.raises(ValueError, match="Discrete action space"):
        DiscreteToText(gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="need 4 action names"):
        DiscreteToText(gym.make("FrozenLake-v1"), action_names=["a"])


def test_render_value() -> None:
    assert render_value(np.array([0.123456, 1.0], dtype=np.float32)) == "[0.1235, 1.    ]"
    assert render_value((np.int64(3), 1.5, {"a": np.array([1, 2])})) == "(3, 1.5, {a: [1, 2]})"


ITEMS = [("Capital of France?", "Paris"), ("2+2?", "4"), ("Color of the sky?", "blue")]


def test_qa_env_single_turn() -> None:
    env = QAEnv(ITEMS, format="compact")
    check_env(env)
    obs, info = env.reset(options={"index": 1}, seed=0)
    assert obs == "2+2?" and info["system"] == "Answer the question. Answer: <answer>X</answer>"
    assert env.step("<answer> 4 </answer>")[1:3] == (1.0, True)
    env.reset(seed=5)
    obs, reward, terminated, truncated, info = env.step("no idea")
    assert (reward, terminated, truncated, info["malformed"]) == (0.0, False, False, 1)
    obs, reward, terminated, truncated, info = env.step("still no idea")
    assert (reward, terminated, truncated, info["malformed"]) == (0.0, False, True, 2)
    for seed in range(20):
        env.reset(seed=seed)
        assert env.step(env.demonstration(seed)[0])[1] == 1.0


def test_qa_env_with_tools_and_custom_score() -> None:
    items = [("What is 123456*654321?", 123456 * 654321)]

    def close(pred: str, gold: int) -> float:
        return 1.0 if abs(int(pred) - gold) == 0 else 0.5

    env = QAEnv(items, score_fn=close, tools=["calc"], format="compact")
    obs, info = env.reset(seed=0)
    assert "<call>calc EXPR</call>" in info["system"] and env.max_turns == 4
    assert env.step("<call>calc 123456*654321</call>")[0] == f"<result>{123456 * 654321}</result>"
    assert env.step("<answer>1</answer>")[1] == 0.5
    env.reset(seed=0)
    assert env.step("<answer>not a number</answer>")[1] == 0.0  # scorer raised: scored 0
    assert exact_match(" a ", "a") == 1.0


def test_qa_env_needs_items() -> None:
    with pytest.raises(ValueError, match="at least one"):
        QAEnv([])


def test_reasoning_gym_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import fails
    with pytest.raises(ImportError, match=r"steprl\[reasoning\]"):
        reasoning_gym_env("leg_counting")


def test_reasoning_gym_with_fake_module(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeDataset(list):
        def score_answer(self, answer: str, entry: dict) -> float:
            return 1.0 if answer.strip() == entry["answer"] else 0.1

    fake = types.ModuleType("reasoning_gym")
    calls = {}

    def create_dataset(name: str, size: int, seed: int) -> FakeDataset:
        calls.update(name=name, size=size, seed=seed)
        return FakeDataset({"question": f"q{i}?", "answer": str(i * i), "metadata": {}} for i in range(size))

    fake.create_dataset = create_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "reasoning_gym", fake)
    env = reasoning_gym_env("squares", size=5, seed=3, format="compact")
    assert calls == {"name": "squares", "size": 5, "seed": 3}
    obs, _ = env.reset(options={"index": 3})
    assert obs == "q3?"
    assert env.step("<answer>9</answer>")[1] == 1.0
    env.reset(options={"index": 3})
    assert env.step("<answer>8</answer>")[1] == pytest.approx(0.1)
    assert env.demonstration(0) == [f"<answer>{env.task_for_seed(0).answer}</answer>"]
