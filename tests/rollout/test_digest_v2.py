"""The trajectory digest covers what the learner consumes: behaviour log-probs and the error field
(review finding 10). Records written before (format v1, digest without them) still load and are verified
by the rule they were written with.

`data/rollouts_v1/step_000003.jsonl.gz` was written by `rollout.store.write_step` at commit 87d174d (v1):
one played episode and one errored (tool-timeout) episode.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest
import torch

from steprl.rollout.replay import compare
from steprl.rollout.store import FORMAT, RecordError, read_file, read_step, write_step
from steprl.rollout.trajectory import EpisodeSpec, Trajectory, compute_digest

V1_DIR = Path(__file__).parent / "data" / "rollouts_v1"


def make(logprobs=(0.0, -0.5, -1.25), error=""):
    spec = EpisodeSpec(step=2, index=5, group=1, member=1, env_id="steprl/Calculator-v0", env_seed=9, sample_key=7)
    return Trajectory.build(spec=spec, policy_version=2, tokens=(1, 2, 3), action_mask=(0, 1, 1),
                            behavior_logprobs=logprobs, reward=1.0, turn_rewards=(1.0,), num_turns=1, finished=True,
                            truncated=False, tool_calls=0, tool_errors=0, error=error)


def test_one_behaviour_logprob_bit_changes_the_digest():
    t = make()
    # the neighbouring float32 (log-probs are float32 values): one bit of the sampler's output apart
    nudged = float(torch.nextafter(torch.tensor(-1.25), torch.tensor(0.0)))
    assert nudged != -1.25
    assert make(logprobs=(0.0, -0.5, nudged)).digest != t.digest
    d = t.to_dict()
    d["behavior_logprobs"][2] = nudged  # a tampered log-prob with the old digest kept is caught
    assert not Trajectory.from_dict(d).verify()


def test_the_error_field_changes_the_digest():
    assert make(error="step raised ValueError: boom").digest != make().digest


def test_a_v1_record_still_loads_and_is_verified_by_the_v1_rule(tmp_path):
    trajs = read_step(V1_DIR, 3)
    assert [t.spec.index for t in trajs] == [0, 1] and trajs[1].error.startswith("tool timeout")
    assert all(t.digest == compute_digest(t, version=1) for t in trajs)  # digests as stored, v1 rule
    assert all(t.digest != compute_digest(t) for t in trajs)  # the current rule gives other digests
    # the v1 rule is still checked: a tampered token in an old record is caught
    lines = gzip.decompress((V1_DIR / "step_000003.jsonl.gz").read_bytes()).decode().splitlines()
    rec = json.loads(lines[1])
    rec["tokens"][2] = 9
    bad = tmp_path / "step_000003.jsonl.gz"
    bad.write_bytes(gzip.compress(("\n".join([lines[0], json.dumps(rec), lines[2]]) + "\n").encode()))
    with pytest.raises(RecordError, match="digest mismatch for episode 0"):
        read_file(bad)


def test_replay_of_a_v1_record_compares_by_the_v1_rule():
    recorded = read_step(V1_DIR, 3)
    replayed = [Trajectory.build(**{f.name: getattr(t, f.name) for f in dataclasses.fields(t)}) for t in recorded]
    assert all(p.digest != r.digest for p, r in zip(replayed, recorded))  # new digests for the same episodes
    assert compare(recorded, replayed) == []
    changed = [replayed[0], dataclasses.replace(replayed[1], reward=1.0)]
    assert [m.index for m in compare(recorded, changed)] == [1]


def test_new_records_are_v2_and_round_trip(tmp_path):
    assert FORMAT == "steprl-rollouts-v2"
    trajs = [make(), dataclasses.replace(make(error="x"), spec=dataclasses.replace(make().spec, index=6))]
    trajs[1] = Trajectory.build(**{f.name: getattr(trajs[1], f.name) for f in dataclasses.fields(trajs[1])})
    write_step(tmp_path, 4, trajs)
    back = read_step(tmp_path, 4)
    assert back == trajs and all(t.verify() for t in back)
