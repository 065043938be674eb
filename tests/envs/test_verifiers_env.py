"""steprl/Verifiers-v0 against a real verifiers (v1) taskset and env (README's example, with a second reward added in
the test): verifiers runs each episode and scores it; the test plays the model's turns."""

import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip("verifiers.v1", reason="the verifiers extra is part of the test extra")

import steprl.envs  # noqa: E402,F401
from steprl.envs.process_resources import SHARED  # noqa: E402
from steprl.envs.qa_file import HELD_OUT_SEEDS  # noqa: E402
from steprl.envs.verifiers_env import VerifiersEnv  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ecosystem"
# README's example taskset (examples/ecosystem/sums_tasks.py: one reward, a second try after a wrong answer), its
# first 40 tasks with a second, weighted reward: the episode's reward is the weighted sum
TASKSET = textwrap.dedent('''
    import verifiers.v1 as vf
    from sums_tasks import SecondTryEnv, SumTask, SumTaskset, answer_of

    class TaggedSumTask(SumTask):
        @vf.reward(weight=0.25)
        async def tagged(self, task, trace: vf.Trace) -> float:
            return float(answer_of(trace.last_reply) is not None)

    class TaggedSums(SumTaskset):
        def load(self):
            for i, task in zip(range(40), super().load()):
                yield TaggedSumTask(task.data, self.config.task)

    __all__ = ["SecondTryEnv", "TaggedSums"]
''')


@pytest.fixture
def taskset(tmp_path, monkeypatch):
    """The taskset module `vf_sums_probe` on sys.path; this process's verifiers runtimes closed afterwards."""
    (tmp_path / "vf_sums_probe.py").write_text(TASKSET)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "vf_sums_probe"
    SHARED.close_all()
    sys.modules.pop("vf_sums_probe", None)


def solve(obs):
    a, b = obs.split("+")
    return str(int(a) + int(b))


def test_tasks_split_by_seeded_rule_and_seeds_pick_their_side(taskset):
    env = gym.make("steprl/Verifiers-v0", taskset=taskset, held_out_fraction=0.25).unwrapped
    assert sorted(env.train + env.held) == list(range(40)) and not set(env.train) & set(env.held)
    assert 3 <= len(env.held) <= 20
    again = VerifiersEnv(taskset=taskset, held_out_fraction=0.25)
    assert (again.train, again.held) == (env.train, env.held)
    assert all(env.task_index(s) in env.train for s in range(50))
    assert all(env.task_index(HELD_OUT_SEEDS + s) in env.held for s in range(50))


def test_verifiers_runs_the_episode_and_its_taskset_scores_it(taskset):
    env = gym.make("steprl/Verifiers-v0", taskset=taskset, max_turns=3)
    obs, info = env.reset(seed=7)
    task = env.unwrapped.runtime.tasks[env.unwrapped.task_index(7)]
    assert obs == task.data.prompt and info["system"] == "Add the numbers. Answer: <answer>X</answer>"
    assert info["stop"] == ["</answer>"] and info["task"] == task.data.id
    obs, reward, term, trunc, info = env.step("<answer>-1</answer>")  # the env answers: a second turn
    assert (obs, reward, term, trunc, info["turn"]) == ("Wrong. Try again.", 0.0, False, False, 1)
    obs, reward, term, trunc, info = env.step(f"<answer>{solve(task.data.prompt)}</answer>")
    assert term and not trunc and reward == 1.25 and info["success"] and obs == ""
    env.reset(seed=8)
    obs, reward, term, _, info = env.step("no tag")
    assert obs == "Wrong. Try again." and reward == 0.0 and not term


def test_an_episode_cut_at_max_turns_is_cancelled_and_the_next_one_plays(taskset):
    env = gym.make("steprl/Verifiers-v0", taskset=taskset, max_turns=1)
    obs, _ = env.reset(seed=1)
    _, reward, term, trunc, _ = env.step("<answer>0</answer>")
    assert trunc and not term and reward == 0.0
    obs, _ = env.reset(seed=2)
    _, reward, term, trunc, info = env.step(f"<answer>{solve(obs)}</answer>")
    assert term and reward == 1.25 and info["success"]


def test_env_instances_in_one_process_keep_their_own_episodes(taskset):
    a = gym.make("steprl/Verifiers-v0", taskset=taskset, max_turns=3)
    b = gym.make("steprl/Verifiers-v0", taskset=taskset, max_turns=3)
    assert a.unwrapped.runtime is b.unwrapped.runtime  # one verifiers env serving, shared
    oa, _ = a.reset(seed=3)
    ob, _ = b.reset(seed=4)
    assert b.step("<answer>x</answer>")[0] == "Wrong. Try again."
    _, ra, ta, _, _ = a.step(f"<answer>{solve(oa)}</answer>")
    _, rb, tb, _, _ = b.step(f"<answer>{solve(ob)}</answer>")
    assert (ra, ta, rb, tb) == (1.25, True, 1.25, True)


def test_bad_kwargs_are_named(taskset):
    with pytest.raises(ValueError, match="verifiers imports a taskset by its module name"):
        VerifiersEnv(taskset="my.tasks")
    with pytest.raises(ValueError, match="max_turns must be >= 1"):
        VerifiersEnv(taskset=taskset, max_turns=0)
    with pytest.raises(ValueError, match="empty split"):
        VerifiersEnv(taskset=taskset, held_out_fraction=0.999999)
    with pytest.raises(ModuleNotFoundError, match="taskset 'no_such_taskset' not found"):
        VerifiersEnv(taskset="no_such_taskset")


def test_a_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "verifiers.v1", None)  # as if verifiers were not installed
    with pytest.raises(ImportError, match=r"pip install 'steprl\[verifiers\]'"):
        VerifiersEnv(taskset="some_tasks")
