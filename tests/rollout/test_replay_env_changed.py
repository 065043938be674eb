"""`compare` says where a replay first differs: in a sampled token (the policy's side) or in what the env wrote
(its prompt, or the observation after agent turn K), which means the env changed (issue 31)."""

from steprl.rollout.replay import compare, env_segment
from steprl.rollout.trajectory import EpisodeSpec, Trajectory

SPEC = EpisodeSpec(step=0, index=3, group=0, member=0, env_id="e", env_seed=1, sample_key=2)
# prompt 0-2 | agent 3-4 | obs 5-6 | agent 7-8 | obs 9 | agent 10
MASK = (0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1)
TOKENS = tuple(range(100, 111))


def traj(tokens):
    return Trajectory.build(spec=SPEC, policy_version=0, tokens=tokens, action_mask=MASK,
                            behavior_logprobs=tuple(-0.5 * m for m in MASK), reward=0.0, turn_rewards=(0.0, 0.0, 0.0),
                            num_turns=3, finished=True, truncated=False, tool_calls=0, tool_errors=0, prompt_len=3)


def changed(pos):
    return traj(tuple(t + 1 if i == pos else t for i, t in enumerate(TOKENS)))


def test_segments_name_the_prompt_and_each_observation():
    t = traj(TOKENS)
    assert env_segment(t, 1) == "the prompt (the env's reset observation)"
    assert env_segment(t, 3) is None and env_segment(t, 8) is None and env_segment(t, 10) is None
    assert env_segment(t, 5) == env_segment(t, 6) == "the observation after agent turn 1"
    assert env_segment(t, 9) == "the observation after agent turn 2"


def test_a_differing_observation_is_reported_as_the_env_changing():
    recorded = [traj(TOKENS)]
    assert compare(recorded, [traj(TOKENS)]) == []
    (m,) = compare(recorded, [changed(6)])
    assert m.env_changed and m.first_token == 6
    assert m.detail.endswith("in the observation after agent turn 1: the env changed")
    (m,) = compare(recorded, [changed(0)])
    assert m.env_changed and "in the prompt" in m.detail


def test_a_differing_sampled_token_is_not_blamed_on_the_env():
    (m,) = compare([traj(TOKENS)], [changed(7)])
    assert not m.env_changed and m.first_token == 7 and "the env changed" not in m.detail
