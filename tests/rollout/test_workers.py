"""Rollout pool: inline, 1 and 2 Ray workers give identical trajectories; replay proves records;
bad envs are contained."""

import gymnasium as gym
import pytest
import ray

from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.rollout.plan import plan_step
from steprl.rollout.ray_setup import init_ray
from steprl.rollout.replay import compare, replay
from steprl.rollout.workers import RolloutPool, RolloutWorker, WorkerSpec

CFG = load_config(
    "smoke", ["rollout.groups=4", "rollout.group_size=4", "rollout.micro_batch=4", "env.kwargs.max_turns=3"]
)


@pytest.fixture(scope="module")
def ray_session():
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def policy():
    return build_policy(CFG.model, CFG.tokenizer, seed=3)


def spec_for(policy, env_kwargs=None):
    return WorkerSpec(
        policy.model.config, policy.tokenizer, dict(env_kwargs or CFG.env.kwargs), CFG.rollout.sampling, 1
    )


def play(policy, executor, workers, step=1):
    cfg = load_config("smoke", ["rollout.groups=4", "rollout.group_size=4", "rollout.micro_batch=4",
                                f"rollout.executor={executor}", f"rollout.workers={workers}"])
    pool = RolloutPool(spec_for(policy), cfg.rollout)
    pool.set_weights(step, {k: v.clone() for k, v in policy.model.state_dict().items()})
    try:
        return pool.play(plan_step(CFG, step))
    finally:
        pool.close()


def test_inline_one_and_two_ray_workers_identical(ray_session, policy):
    inline = play(policy, "inline", 1)
    one = play(policy, "ray", 1)
    two = play(policy, "ray", 2)
    assert [t.digest for t in inline] == [t.digest for t in one] == [t.digest for t in two]
    assert [t.spec.index for t in two] == list(range(16))
    assert [t.behavior_logprobs for t in inline] == [t.behavior_logprobs for t in two]  # bitwise
    assert len({t.digest for t in inline}) == 16  # and the episodes really differ


def test_replay_identical_then_detects_a_changed_token(policy):
    recorded = play(policy, "inline", 1, step=2)
    worker = RolloutWorker(spec_for(policy))
    worker.set_weights(2, {k: v.clone() for k, v in policy.model.state_dict().items()})
    again = replay(worker, plan_step(CFG, 2), 2, CFG.rollout.micro_batch)
    assert compare(recorded, again) == []
    only = replay(worker, plan_step(CFG, 2), 2, CFG.rollout.micro_batch, episode=5)
    assert [t.spec.index for t in only] == [4, 5, 6, 7]  # exactly the micro-batch holding episode 5
    tampered = list(recorded)
    t = tampered[5]
    pos = t.prompt_len + 1
    toks = list(t.tokens)
    toks[pos] = (toks[pos] + 1) % 50 + 4
    tampered[5] = type(t).build(
        **{**{f: getattr(t, f) for f in t.__dataclass_fields__ if f != "digest"}, "tokens": toks}
    )
    bad = compare(tampered, again)
    assert [m.index for m in bad] == [5] and bad[0].first_token == pos


class ExplodingEnv(gym.Wrapper):
    """Raises on the second turn of episodes with an odd seed."""

    def reset(self, **kw):
        self._odd, self._n = kw.get("seed", 0) % 2 == 1, 0
        return self.env.reset(**kw)

    def step(self, action):
        self._n += 1
        if self._odd and self._n >= 1:
            raise RuntimeError("env exploded")
        return self.env.step(action)


def test_env_that_raises_is_contained(policy):
    worker = RolloutWorker(spec_for(policy))
    worker.set_weights(0, {k: v.clone() for k, v in policy.model.state_dict().items()})
    specs = plan_step(CFG, 0)[::4]  # one episode from each group: four different env seeds
    env_id = specs[0].env_id
    worker.envs[env_id] = [ExplodingEnv(gym.make(env_id, **CFG.env.kwargs)) for _ in range(4)]
    trajs = worker.play(specs, 0)
    odd = [t for t in trajs if t.spec.env_seed % 2 == 1]
    even = [t for t in trajs if t.spec.env_seed % 2 == 0]
    assert odd and even, [t.spec.env_seed for t in trajs]
    for t in odd:
        assert t.truncated and "env exploded" in t.error and not t.success
    for t in even:
        assert t.error == ""
    # the worker still plays afterwards
    worker.envs[env_id] = [gym.make(env_id, **CFG.env.kwargs) for _ in range(4)]
    assert len(worker.play(specs, 0)) == 4


def test_an_actor_dead_before_a_weight_sync_is_replaced_and_given_the_version(ray_session, policy):
    cfg = load_config("smoke", ["rollout.groups=4", "rollout.group_size=4", "rollout.micro_batch=4",
                                "rollout.executor=ray", "rollout.workers=2"])
    pool = RolloutPool(spec_for(policy), cfg.rollout)
    weights = {k: v.clone() for k, v in policy.model.state_dict().items()}
    try:
        pool.set_weights(1, weights)
        ray.kill(pool.workers[1])  # dies between versions: the next sync must not take the driver down
        pool.set_weights(2, weights)
        assert pool.restarts == 1
        assert [t.digest for t in pool.play(plan_step(CFG, 2))] == [t.digest for t in play(policy, "inline", 1, 2)]
    finally:
        pool.close()
