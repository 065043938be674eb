"""Config errors are one line, exit 2, and leave no run directory (issue 20 #3, #5, #7); config composition."""

import socket
import sys
import textwrap
import time

import pytest

from steprl.cli import main
from steprl.config import load_config

REVERSE = '''
import gymnasium as gym
from steprl.envs import ExpertStep, Task, ToolTaskEnv


class ReverseEnv(ToolTaskEnv):
    task_hint = "Reverse the word."

    def __init__(self, length=4, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def make_task(self, rng):
        word = "".join(rng.choice(list("abcdef"), self.length))
        return Task(word, word[::-1])

    def expert_turns(self, task):
        return [ExpertStep(answer=task.answer)]


gym.register(id="Reverse-v0", entry_point=ReverseEnv, disable_env_checker=True)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "revmod.py").write_text(textwrap.dedent(REVERSE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "revmod:Reverse-v0"
    sys.modules.pop("revmod", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(tmp_path, capsys, *overrides) -> str:
    assert main(["train", "smoke", f"run.root={tmp_path / 'runs'}", *overrides]) == 2
    assert not (tmp_path / "runs" / "smoke").exists()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "auto"])
def test_an_unreachable_ray_address_is_refused_before_any_work(tmp_path, capsys, monkeypatch, address):
    port = _free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # `auto` with a stale session: nothing listens there
    t0 = time.perf_counter()
    err = _refused(tmp_path, capsys, "rollout.executor=ray", f"ray.address={address.format(port=port)}",
                   "ray.connect_timeout_s=3")
    assert time.perf_counter() - t0 < 10
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err


def test_a_malformed_ray_address_is_a_one_line_error(tmp_path, capsys):
    err = _refused(tmp_path, capsys, "rollout.executor=ray", "ray.address=notanaddress")
    assert "ray.address='notanaddress': expected HOST:PORT" in err


def test_sizes_above_the_sane_bounds_are_refused_unless_allowed(tmp_path, capsys):
    assert "rollout.group_size" in _refused(tmp_path, capsys, "rollout.group_size=100000")
    assert "rl.steps" in _refused(tmp_path, capsys, "rl.steps=100000000000000000000000")
    assert load_config("smoke", ["rl.steps=100000000000000000000000", "run.allow_large=true"]).rl.steps == 10**23


def test_a_discrete_env_and_a_warmup_without_demonstrations_are_config_errors(tmp_path, capsys):
    assert "is not a text env" in _refused(tmp_path, capsys, "env.id=FrozenLake-v1", "env.kwargs={}")
    err = _refused(tmp_path, capsys, "env.id=steprl/Discrete-v0", "env.kwargs={}")
    assert "warmup stage needs expert demonstrations" in err
    assert "cannot be made with env.kwargs" in _refused(tmp_path, capsys, "env.kwargs={digits: oops}")


def test_env_kwargs_replace_and_a_new_env_id_drops_kwargs_it_does_not_accept(user_module, caplog):
    caplog.set_level("INFO")
    assert load_config("smoke", ["env.kwargs={}"]).env.kwargs == {}
    assert load_config("smoke", ["env.kwargs.digits=3"]).env.kwargs == {"format": "compact", "digits": 3,
                                                                         "max_turns": 2}
    cfg = load_config("smoke", [f"env.id={user_module}"])
    assert cfg.env.kwargs == {"format": "compact", "max_turns": 2}
    assert "dropped earlier env.kwargs it does not accept: digits" in caplog.text


def test_a_user_env_trains_with_the_preset_and_dry_run_shows_stages_tasks_and_scheduling(
        tmp_path, capsys, user_module):
    assert main(["train", "smoke", f"run.root={tmp_path}", f"env.id={user_module}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# stages: warmup -> rl -> eval" in out
    assert "inline executor: 1 worker plays micro-batches 0..1 in index order" in out
    assert "task:" in out and not (tmp_path / "smoke").exists()
    out = capsys.readouterr().out
    big = ["rollout.group_size=1000", "rollout.groups=8", "rollout.micro_batch=8", "rollout.executor=ray",
           "rollout.workers=3", "ray.num_cpus=3"]  # 3 actors of 1 CPU: refused on a smaller machine otherwise
    assert main(["train", "smoke", f"run.root={tmp_path}", *big, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ray executor: 1000 micro-batches of 8 queued; 3 actors each take the next when idle" in out
    assert "... 7936 more episodes" in out and len(out.splitlines()) < 300  # config + 64 episodes + topology


def test_student_layers_beyond_the_teacher_or_malformed_are_refused_before_any_work(tmp_path, capsys):
    distill = ("stages=[warmup,rl,distill,eval]",)
    err = _refused(tmp_path, capsys, *distill, "distill.student_layers=[0,3]")
    assert "distill.student_layers names layer 3, but the teacher has 1 decoder layers (indices 0-0)" in err
    assert "strictly increasing" in _refused(tmp_path, capsys, *distill, "distill.student_layers=[0,0]")
    assert "choose one source" in _refused(tmp_path, capsys, *distill, "distill.student_layers=[0]",
                                           "distill.student_from_teacher=2")


def test_the_packaged_gguf_teachers_layers_are_read_without_loading_it():
    from steprl.run.loop.preflight import student_layer_problem, teacher_layer_count

    cfg = load_config("smollm2", ["distill.student_from_teacher=0", "distill.student_layers=[0,5,30]"])
    assert teacher_layer_count(cfg, standalone_distill=False) == 30  # SmolLM2-135M: 30 decoder layers
    assert "names layer 30, but the teacher has 30 decoder layers (indices 0-29)" in student_layer_problem(cfg, False)
