"""steprl/OpenEnv-v0 against real OpenEnv environments (openenv-core's Environment, its FastAPI server and client):
README's example game and a seed-dropping variant written in the test; in-process, on a local server the env
starts, and at a URL."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip("openenv.core", reason="the openenv extra is part of the test extra")

import steprl.envs  # noqa: E402,F401
from steprl.envs.openenv_env import OpenEnvEnv, RemoteEnvFault  # noqa: E402
from steprl.envs.process_resources import SHARED  # noqa: E402
from steprl.envs.tools import ToolTimeout  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ecosystem"
# README's example game (examples/ecosystem/guess_game.py), and the OpenEnv issue #1102 bug made repeatable: a
# game that draws its secrets from a fixed stream, whatever seed it is given
SEED_DROPPING = textwrap.dedent('''
    import random

    from guess_game import GuessEnvironment, GuessObservation, State

    class SeedDroppingEnvironment(GuessEnvironment):
        def __init__(self, high=1000):
            super().__init__(high)
            self._draws = random.Random(0)

        def reset(self, seed=None, episode_id=None, **kwargs):
            self.secret = self._draws.randint(1, self.high)
            self._state = State(episode_id=episode_id, step_count=0)
            return GuessObservation(prompt=f"Guess the number from 1 to {self.high}.")
''')


@pytest.fixture
def game(tmp_path, monkeypatch):
    """The example game and the seed-dropping one on sys.path (a local server child inherits it); servers closed
    afterwards."""
    (tmp_path / "oe_seed_dropping.py").write_text(SEED_DROPPING)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "guess_game:GuessEnvironment"
    SHARED.close_all()
    sys.modules.pop("oe_seed_dropping", None)


def play(env, seed, guesses):
    """Observation, reward and done of reset(seed) then each guess."""
    obs, info = env.reset(seed=seed)
    out = [obs]
    for g in guesses:
        obs, reward, term, trunc, info = env.step(f"<answer>{g}</answer>")
        out.append((obs, reward, term, trunc, info["success"]))
    return out


def search(env, seed):
    """Binary search through the env; the number of turns it took and the final step."""
    obs, _ = env.reset(seed=seed)
    lo, hi = 1, 8
    for turn in range(1, 9):
        mid = (lo + hi) // 2
        obs, reward, term, trunc, info = env.step(f"thinking... <answer>{mid}</answer>")
        if term:
            return turn, reward, info["success"]
        lo, hi = (mid + 1, hi) if obs == "higher" else (lo, mid - 1)
    raise AssertionError("never found")


def test_inprocess_and_local_server_play_the_same_episodes(game):
    inproc = gym.make("steprl/OpenEnv-v0", env=game, max_turns=8)
    served = gym.make("steprl/OpenEnv-v0", env=game, serve="local", max_turns=8)
    for seed in (0, 1, 7, 2**31 + 5):
        a, b = play(inproc, seed, [4, 2, 6]), play(served, seed, [4, 2, 6])
        assert a == b
        assert a[0] == "Guess the number from 1 to 8."
        assert search(inproc, seed) == search(served, seed)
    turns, reward, success = search(served, 3)
    assert reward == 1.0 and success and 1 <= turns <= 4
    served.close()


def test_a_turn_without_an_answer_tag_is_malformed_and_never_reaches_the_env(game):
    env = gym.make("steprl/OpenEnv-v0", env=game, max_turns=2)
    env.reset(seed=0)
    obs, reward, term, trunc, info = env.step("four")
    assert "error" in obs and reward == 0.0 and not term and not trunc and info["malformed"] == 1
    assert env.unwrapped._session.env.state.step_count == 0
    obs, reward, term, trunc, info = env.step("<answer>9</answer>")  # wrong: max_turns reached
    assert trunc and not term and obs in ("lower", "higher")


def test_an_env_that_drops_its_seed_fails_preflight_naming_it(game):
    good = gym.make("steprl/OpenEnv-v0", env=game, env_kwargs={"high": 1000}, seed_probe=["500", "600"])
    assert good.unwrapped.preflight_problems() == []
    bad = gym.make("steprl/OpenEnv-v0", env="oe_seed_dropping:SeedDroppingEnvironment",
                   seed_probe=["500", "600", "700", "800"])  # secrets 865 then 395: "higher" then "lower"
    problems = bad.unwrapped.preflight_problems()
    assert len(problems) == 1 and "does not honour its seed" in problems[0] and "seed_probe action" in problems[0]


def test_a_server_at_a_url_is_played_through_the_same_client(game, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "steprl.envs.openenv_server", "--env", game],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        url = f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}"
        remote = gym.make("steprl/OpenEnv-v0", url=url, max_turns=8)
        inproc = gym.make("steprl/OpenEnv-v0", env=game, max_turns=8)
        assert play(remote, 11, [1, 8, 4]) == play(inproc, 11, [1, 8, 4])
        remote.reset(seed=11)
        proc.kill()
        proc.wait()
        with pytest.raises(RemoteEnvFault, match="failed on step"):  # a fault the pool retries, not an observation
            remote.step("<answer>3</answer>")
        assert issubclass(RemoteEnvFault, ToolTimeout)
        with pytest.raises(RemoteEnvFault, match="did not accept a session"):
            remote.reset(seed=11)
    finally:
        proc.kill()


def test_bad_kwargs_are_named(game):
    with pytest.raises(ValueError, match="exactly one of env"):
        OpenEnvEnv()
    with pytest.raises(ValueError, match="serve must be one of"):
        OpenEnvEnv(env=game, serve="docker")
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        OpenEnvEnv(env="no_such_module:Env")
    with pytest.raises(ValueError, match=r"set action_field .* the action has \['guess'\], not 'move'"):
        OpenEnvEnv(env=game, action_field="move")
    with pytest.raises(ValueError, match="no OpenEnv server answers at http://127.0.0.1:9"):
        OpenEnvEnv(url="http://127.0.0.1:9", timeout_s=2)


def _refused(tmp_path, capsys, *overrides):
    from steprl.cli import main

    assert main(["train", "smoke", f"run.root={tmp_path / 'runs'}", "stages=[rl,eval]", *overrides]) == 2
    assert not (tmp_path / "runs").exists()  # nothing was started
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_run_on_an_env_that_drops_its_seed_is_refused_before_it_starts(game, tmp_path, capsys):
    err = _refused(tmp_path, capsys, "env.id=steprl/OpenEnv-v0",
                   "env.kwargs={env: 'oe_seed_dropping:SeedDroppingEnvironment', "
                   "seed_probe: ['500', '600', '700', '800']}")
    assert "does not honour its seed" in err and "OpenEnv issue #1102" in err


def test_a_missing_extra_is_named(game, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openenv.core", None)  # as if openenv-core were not installed
    err = _refused(tmp_path, capsys, "env.id=steprl/OpenEnv-v0", f"env.kwargs={{env: '{game}'}}")
    assert "pip install 'steprl[openenv]'" in err
