"""EpisodeSpec/Trajectory records: JSON round trip, digest sensitivity, validation messages."""

import json
from dataclasses import replace

import pytest

from steprl.rollout.trajectory import EpisodeSpec, Trajectory, compute_digest


def make(tokens=(1, 2, 3), reward=1.0):
    spec = EpisodeSpec(
        step=2, index=5, group=1, member=1, env_id="steprl/Calculator-v0", env_seed=9, sample_key=2**63 + 5
    )
    return Trajectory.build(
        spec=spec,
        policy_version=2,
        tokens=tokens,
        action_mask=(0, 1, 1),
        behavior_logprobs=(0.0, -0.5, -1.25),
        reward=reward,
        turn_rewards=(0.0, reward),
        num_turns=2,
        finished=True,
        truncated=False,
        tool_calls=1,
        tool_errors=0,
    )


def test_round_trip_is_exact():
    t = make()
    back = Trajectory.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back == t and back.verify()
    assert back.behavior_logprobs == (0.0, -0.5, -1.25)


def test_digest_changes_with_any_token_or_reward():
    t = make()
    assert make(tokens=(1, 2, 4)).digest != t.digest
    assert make(reward=0.0).digest != t.digest
    d = t.to_dict()
    d["tokens"][1] = 7
    assert not Trajectory.from_dict(d).verify()


def test_records_without_logprobs_load_but_only_verify_by_the_v1_rule():
    d = make().to_dict(logprobs=False)
    assert "behavior_logprobs" not in d
    back = Trajectory.from_dict(d)
    assert back.behavior_logprobs == (0.0, 0.0, 0.0)
    assert not back.verify()  # rule 2 digests the log-probs the learner consumes: missing ones are caught
    assert replace(back, digest=compute_digest(back, version=1)).verify(version=1)


def test_length_mismatch_and_bad_fields_are_named():
    spec = make().spec
    with pytest.raises(ValueError, match="equal lengths"):
        Trajectory.build(
            spec=spec,
            policy_version=0,
            tokens=(1, 2),
            action_mask=(1,),
            behavior_logprobs=(0.0, 0.0),
            reward=0,
            num_turns=1,
            finished=True,
            truncated=False,
            tool_calls=0,
            tool_errors=0,
        )
    d = make().to_dict()
    d["tokens"] = "abc"
    with pytest.raises(ValueError, match="tokens"):
        Trajectory.from_dict(d)
    d = make().to_dict()
    d["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        Trajectory.from_dict(d)
    d = make().to_dict()
    del d["spec"]["env_seed"]
    with pytest.raises(ValueError, match="env_seed"):
        Trajectory.from_dict(d)
