"""The tracker fan-out of MetricsLogger: what each tracker receives, once; the seeded episode sample; the checks
of `run.loggers` (no tracking library needed: a recording tracker stands in)."""

from __future__ import annotations

import json

import pytest

from steprl.config import load_config
from steprl.errors import ConfigError
from steprl.rollout.trajectory import EpisodeSpec, Trajectory
from steprl.run.reporting.episodes import best_median_worst, episode_row, sample_indices, sampled_rows
from steprl.run.reporting.metrics import EpisodeSampling, MetricsLogger
from steprl.run.reporting.trackers import EvalPoint, check_installed
from steprl.run.reporting.trackers import registry as registry_module


class Recorder:
    """A tracker that keeps what it is given."""

    name = "recorder"

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail_on = fail_on

    def log_metrics(self, stage, step, metrics):
        if self.fail_on == "metrics":
            raise RuntimeError("backend down")
        self.calls.append(("metrics", stage, step, dict(metrics)))

    def log_eval(self, point):
        self.calls.append(("eval", point.policy, point.stage, point.step))

    def log_episodes(self, stage, step, rows):
        self.calls.append(("episodes", stage, step, [r.index for r in rows]))

    def close(self):
        self.calls.append(("close",))


def _traj(step: int, index: int, reward: float) -> Trajectory:
    spec = EpisodeSpec(step, index, index // 4, index % 4, "e", 7, 100 + index)
    return Trajectory.build(spec=spec, policy_version=step, tokens=(1, 2, 3, 4, 5), action_mask=(0, 0, 1, 0, 1),
                            behavior_logprobs=(0.0, 0.0, -1.0, 0.0, -0.5), reward=reward, turn_rewards=(reward,),
                            num_turns=2, finished=True, truncated=False, tool_calls=1, tool_errors=0,
                            success=reward > 0.5)


def _decode(ids):
    return "".join(chr(ord("a") + i) for i in ids)


def test_trackers_get_each_step_once_across_a_resume_and_evals_once(tmp_path):
    first = Recorder()
    m = MetricsLogger(tmp_path, [first], EpisodeSampling(2, 0, _decode))
    for step in range(3):
        m.log(step, "rl", {"reward_mean": float(step), "step_digest": "ab", "ok": True})
        m.log_episodes("rl", step, [_traj(step, i, i / 8) for i in range(8)])
    m.log_eval(EvalPoint("warmup", "rl", 0, 0.25, 0.1, 0.5, 0.25, 8))
    m.close()
    assert [c[:3] for c in first.calls if c[0] == "metrics"] == [("metrics", "rl", 0), ("metrics", "rl", 1),
                                                                 ("metrics", "rl", 2)]
    assert first.calls[0][3] == {"reward_mean": 0.0, "ok": 1.0}  # numbers only: the digest string stays out
    assert first.calls[-1] == ("close",)

    # resume from a checkpoint at step 1: metrics.jsonl is cut after step 0, steps 1 and 2 are played again
    again = Recorder()
    m = MetricsLogger(tmp_path, [again], EpisodeSampling(2, 0, _decode))
    m.truncate_after(0, "rl")
    for step in range(1, 4):
        m.log(step, "rl", {"reward_mean": float(step)})
        m.log_episodes("rl", step, [_traj(step, i, i / 8) for i in range(8)])
    m.log_eval(EvalPoint("warmup", "rl", 0, 0.25, 0.1, 0.5, 0.25, 8))  # measured again: the same point
    m.log_eval(EvalPoint("rl", "rl", 4, 0.5, 0.2, 0.8, 0.5, 8))
    assert [c for c in again.calls if c[0] != "episodes"] == [("metrics", "rl", 3, {"reward_mean": 3.0}),
                                                              ("eval", "rl", "rl", 4)]
    assert [c[2] for c in again.calls if c[0] == "episodes"] == [3]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]  # metrics.jsonl itself is rewritten as before
    evals = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert [(e["policy"], e["step"], e["ci_high"]) for e in evals] == [("warmup", 0, 0.5), ("rl", 4, 0.8)]


def test_the_episode_sample_is_seeded_by_stage_and_step_and_the_same_on_every_call():
    a = sample_indices(64, 4, 0, "rl", 5)
    assert a == sample_indices(64, 4, 0, "rl", 5) and len(set(a)) == 4 and a == sorted(a)
    others = {tuple(sample_indices(64, 4, 0, "rl", s)) for s in range(6)} | {tuple(sample_indices(64, 4, 1, "rl", 5))}
    assert len(others) > 4  # depends on the step and the seed
    trajs = [_traj(5, i, 0.0) for i in range(64)]
    assert [r.index for r in sampled_rows(list(reversed(trajs)), 4, 0, "rl", 5, _decode)] == a  # order-free


def test_an_episode_row_splits_task_agent_and_env_and_best_median_worst_picks_by_reward():
    row = episode_row(_traj(0, 3, 1.0), _decode)
    assert row.task == "bc" and row.transcript == "agent: d\nenv: e\nagent: f"
    assert (row.reward, row.success, row.tool_calls, row.index) == (1.0, True, 1, 3)
    picks = best_median_worst([_traj(0, i, r) for i, r in enumerate([0.2, 0.9, 0.5, 0.9, 0.1])])
    assert [(label, t.spec.index) for label, t in picks] == [("best", 1), ("median", 2), ("worst", 4)]


def test_a_failing_tracker_is_dropped_and_the_others_go_on(tmp_path, caplog):
    bad, good = Recorder(fail_on="metrics"), Recorder()
    m = MetricsLogger(tmp_path, [bad, good])
    m.log(0, "rl", {"x": 1.0})
    m.log(1, "rl", {"x": 2.0})
    assert [c[2] for c in good.calls] == [0, 1] and bad.calls == []
    assert "logger recorder failed" in caplog.text and "turned off" in caplog.text


def test_run_loggers_rejects_unknown_and_repeated_names(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.loggers.*unknown logger 'neptune'"):
        load_config("smoke", [f"run.root={tmp_path}", "run.loggers=[jsonl,neptune]"])
    with pytest.raises(ConfigError, match=r"run\.loggers.*'jsonl' is listed twice"):
        load_config("smoke", [f"run.root={tmp_path}", "run.loggers=[jsonl,jsonl]"])
    assert load_config("smoke", [f"run.root={tmp_path}"]).run.loggers == ["jsonl"]


def test_a_logger_whose_library_is_missing_is_named_with_its_extra(monkeypatch):
    fake = registry_module.Backend("x", "X", ("no_such_tracking_lib_xyz",), "wandb")
    monkeypatch.setitem(registry_module.BACKENDS, "wandb", fake)
    with pytest.raises(ConfigError, match=r"run\.loggers.*wandb needs no_such_tracking_lib_xyz.*steprl\[wandb\]"):
        check_installed(["jsonl", "wandb"])
    check_installed(["jsonl"])


def test_train_with_a_missing_logger_library_exits_2_naming_it_and_leaves_no_run_directory(tmp_path, monkeypatch,
                                                                                          capsys):
    from steprl.cli import main

    fake = registry_module.Backend("x", "X", ("no_such_tracking_lib_xyz",), "mlflow")
    monkeypatch.setitem(registry_module.BACKENDS, "mlflow", fake)
    assert main(["train", "smoke", f"run.root={tmp_path}", "run.loggers=[jsonl,mlflow]"]) == 2
    assert "pip install 'steprl[mlflow]'" in capsys.readouterr().err
    assert not (tmp_path / "smoke").exists()


def test_a_stage_restarted_on_other_data_is_sent_to_the_trackers_again(tmp_path):
    m = MetricsLogger(tmp_path)
    for step in range(3):
        m.log(step, "distill", {"kl": 1.0})
    rec = Recorder()
    m = MetricsLogger(tmp_path, [rec])
    m.truncate_after(-1, "distill", same_data=False)  # distillation starts over for a new teacher
    m.log(0, "distill", {"kl": 0.5})
    assert rec.calls == [("metrics", "distill", 0, {"kl": 0.5})]
