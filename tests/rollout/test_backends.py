"""Generation backends: adding one is one file, and a step replays through it bit for bit; bad names are clear."""

import pytest

from steprl.agents.policy import build_policy
from steprl.config import ConfigError, load_config
from steprl.rollout.backends import TurnGenerator, make_generator
from steprl.rollout.plan import plan_step
from steprl.rollout.workers import RolloutPool, WorkerSpec

OVR = ["rollout.executor=inline", "rollout.groups=4", "rollout.group_size=4", "rollout.micro_batch=4",
       "env.kwargs.max_turns=3", "rollout.sampling.max_new_tokens=12", "rollout.sampling.max_episode_tokens=256"]


def _play(cfg, policy, backend, options=None, step=1):
    spec = WorkerSpec(policy.model.config, policy.tokenizer, dict(cfg.env.kwargs), cfg.rollout.sampling, 1,
                      backend=backend, backend_options=options or {})
    pool = RolloutPool(spec, cfg.rollout)
    pool.set_weights(step, {k: v.clone() for k, v in policy.model.state_dict().items()})
    try:
        return pool.play(plan_step(cfg, step))
    finally:
        pool.close()


def test_a_step_replays_identically_through_a_one_file_backend():
    cfg = load_config("smoke", OVR)
    policy = build_policy(cfg.model, cfg.tokenizer, seed=3)
    recorded = _play(cfg, policy, "hf")
    assert sum(t.num_turns for t in recorded) > len(recorded)  # multi-turn: observations go through append
    replayed = _play(cfg, policy, "replay_backend:ReplayGenerator", {"trajectories": recorded})
    assert [t.tokens for t in replayed] == [t.tokens for t in recorded]
    assert [t.action_mask for t in replayed] == [t.action_mask for t in recorded]
    assert [t.behavior_logprobs for t in replayed] == [t.behavior_logprobs for t in recorded]
    assert [t.digest for t in replayed] == [t.digest for t in recorded]


def test_backends_satisfy_the_protocol():
    cfg = load_config("smoke", OVR)
    policy = build_policy(cfg.model, cfg.tokenizer, seed=3)
    spec = WorkerSpec(policy.model.config, policy.tokenizer, backend_options={"trajectories": []})
    assert isinstance(make_generator(spec), TurnGenerator)
    spec.backend = "replay_backend:ReplayGenerator"
    assert isinstance(make_generator(spec), TurnGenerator)


@pytest.mark.parametrize("name", ["vllm-nope", "no_such_module_xyz:Gen", "replay_backend:Missing"])
def test_unknown_backend_names_the_key_and_the_known_backends(name):
    with pytest.raises(ConfigError) as e:
        load_config("smoke", [f"rollout.backend={name}"])
    msg = str(e.value)
    assert "rollout.backend" in msg and name in msg and "'hf'" in msg
    with pytest.raises(ValueError, match=r"rollout\.backend.*'hf'"):
        make_generator(WorkerSpec(None, None, backend=name))
