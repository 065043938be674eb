"""The one step loop: records, metrics rows, checkpoint cadence and the clean stop, for any stage's steps."""

from __future__ import annotations

import pytest

from steprl.errors import Interrupted
from steprl.rollout.store import read_step, steps_digest
from steprl.rollout.trajectory import EpisodeSpec, Trajectory
from steprl.run.loop.loop import Loop, run_steps
from steprl.run.reporting.metrics import MetricsLogger, read_metrics


def _traj(step: int, index: int, version: int) -> Trajectory:
    spec = EpisodeSpec(step=step, index=index, group=index, member=0, env_id="steprl/Calculator-v0", env_seed=index,
                       sample_key=index)
    return Trajectory.build(
        spec=spec,
        policy_version=version,
        tokens=(1, 2, 3),
        action_mask=(0, 1, 1),
        behavior_logprobs=(0.0, -0.5, -1.0),
        reward=float(index % 2),
        turn_rewards=(float(index % 2),),
        num_turns=1,
        finished=True,
        truncated=False,
        tool_calls=0,
        tool_errors=0,
    )


class FakeSteps:
    """Records what the loop asked for; plays two episodes per step with version = step."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.stop_after = stop_after

    def play(self, step):
        self.calls.append(("play", step))
        return [_traj(step, i, step) for i in range(2)]

    def update(self, step, trajs):
        self.calls.append(("update", step))
        return {"loss": float(step), "reward_mean": 0.5}

    def step_fields(self, step, trajs):
        return {"custom": step * 10}

    def postfix(self, stats):
        return {"loss": f"{stats['loss']:.1f}"}

    def save(self, next_step):
        self.calls.append(("save", next_step))

    def stop(self) -> bool:
        return self.stop_after is not None and len([c for c in self.calls if c[0] == "update"]) >= self.stop_after


def _loop(tmp_path, metrics, start=0, total=5, every=2) -> Loop:
    return Loop("rl", start, total, every, tmp_path / "rollouts", metrics, "continue with `steprl resume X`")


def test_each_step_is_played_updated_recorded_logged_and_checkpointed_on_cadence(tmp_path):
    steps, metrics = FakeSteps(), MetricsLogger(tmp_path)
    last = run_steps(_loop(tmp_path, metrics), steps, steps.stop)
    metrics.close()
    assert [c for c in steps.calls if c[0] == "save"] == [("save", 2), ("save", 4), ("save", 5)]
    assert [c[1] for c in steps.calls if c[0] == "play"] == [0, 1, 2, 3, 4]
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("stage") == "rl"]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[3]["custom"] == 30 and rows[3]["generated_tokens"] == 4 and rows[3]["policy_version"] == 3
    for k in (0, 4):
        recorded = read_step(tmp_path / "rollouts", k)
        assert rows[k]["step_digest"] == steps_digest(recorded) and len(recorded) == 2
    assert last["loss"] == 4.0


def test_stop_request_checkpoints_the_step_and_raises_with_the_hint(tmp_path):
    steps, metrics = FakeSteps(stop_after=3), MetricsLogger(tmp_path)
    with pytest.raises(Interrupted, match=r"after rl step 3 of 5; continue with `steprl resume X`"):
        run_steps(_loop(tmp_path, metrics, every=10), steps, steps.stop)
    metrics.close()
    assert [c for c in steps.calls if c[0] == "save"] == [("save", 3)]


def test_a_stop_on_the_last_step_finishes_without_raising(tmp_path):
    steps, metrics = FakeSteps(stop_after=5), MetricsLogger(tmp_path)
    run_steps(_loop(tmp_path, metrics, every=10), steps, steps.stop)
    metrics.close()
    assert [c for c in steps.calls if c[0] == "save"] == [("save", 5)]


def test_resumed_loop_starts_at_its_step(tmp_path):
    steps, metrics = FakeSteps(), MetricsLogger(tmp_path)
    run_steps(_loop(tmp_path, metrics, start=3), steps, steps.stop)
    metrics.close()
    assert [c[1] for c in steps.calls if c[0] == "play"] == [3, 4]


def test_a_stop_requested_during_a_checkpoint_stops_right_after_it(tmp_path):
    class StopWhileSaving(FakeSteps):
        requested = False

        def save(self, next_step):
            super().save(next_step)
            self.requested = True  # Ctrl-C lands while this checkpoint is written

        def stop(self) -> bool:
            return self.requested

    steps, metrics = StopWhileSaving(), MetricsLogger(tmp_path)
    with pytest.raises(Interrupted, match=r"after rl step 2 of 5"):
        run_steps(_loop(tmp_path, metrics, every=2), steps, steps.stop)
    metrics.close()
    assert [c for c in steps.calls if c[0] == "save"] == [("save", 2)]
