"""An episode whose prompt exceeds the token budget is never run through the model, never reaches the learner at
full length, and is counted (review finding 12).

Before, `play_micro_batch` marked such a row dead but still handed its prompt to the generator, whose
`_feed_pending` fed every row's pending tokens whatever `need` said: an 8k-token item was prefilled with the
micro-batch and kept at full length in the learner batch (`collate` pads to the longest row).
"""

from __future__ import annotations

import gymnasium as gym
import pytest

from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.learners.batch import collate
from steprl.rollout.faults import fault_fields
from steprl.rollout.plan import plan_step
from steprl.rollout.workers import RolloutWorker, WorkerSpec

CFG = load_config("smoke", ["rollout.groups=4", "rollout.group_size=4", "rollout.micro_batch=4"])
BUDGET = CFG.rollout.sampling.max_episode_tokens
LONG = "x" * (3 * BUDGET)  # the character tokenizer: at least one token per character


class LongPromptEnv(gym.Wrapper):
    """A question far over the budget on odd env seeds (a QA item too long for max_episode_tokens)."""

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return (LONG + obs if seed % 2 else obs), info


class ForwardSpy:
    """Wraps the backend's decoder; records the [B, L] shape of every forward's input ids."""

    def __init__(self, inner):
        self.inner, self.shapes = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *, input_ids, **kw):
        self.shapes.append(tuple(input_ids.shape))
        return self.inner(input_ids=input_ids, **kw)


@pytest.fixture(scope="module")
def played():
    policy = build_policy(CFG.model, CFG.tokenizer, seed=3)
    worker = RolloutWorker(WorkerSpec(policy.model.config, policy.tokenizer, dict(CFG.env.kwargs),
                                      CFG.rollout.sampling, 1))
    worker.set_weights(0, {k: v.clone() for k, v in policy.model.state_dict().items()})
    spy = ForwardSpy(worker.generator.decoder)
    worker.generator.decoder = spy
    specs = plan_step(CFG, 0)[::4]  # one episode from each group: four different env seeds
    env_id = specs[0].env_id
    worker.envs[env_id] = [LongPromptEnv(gym.make(env_id, **CFG.env.kwargs)) for _ in range(4)]
    return specs, worker.play(specs, 0), spy.shapes


def test_an_over_budget_prompt_is_never_prefilled(played):
    specs, trajs, shapes = played
    long = [t for t in trajs if t.spec.env_seed % 2]
    assert long and len(long) < len(trajs), [s.env_seed for s in specs]  # both kinds in the micro-batch
    assert shapes  # the short episodes were played
    assert max(width for _, width in shapes) < BUDGET  # the long prompt (> 3 x budget tokens) never entered


def test_it_is_a_truncated_episode_with_a_reason_and_counted(played):
    _, trajs, _ = played
    long = [t for t in trajs if t.spec.env_seed % 2]
    for t in long:
        assert t.truncated and not t.finished and t.num_turns == 0 and not t.success
        assert "exceeds max_episode_tokens" in t.error and f"({BUDGET})" in t.error
        assert t.tokens == () and t.verify()  # never recorded (or trained) at full length
    assert fault_fields(trajs)["rollout/over_budget"] == float(len(long))
    assert fault_fields(trajs)["rollout/errored_episodes"] == float(len(long))
    for t in trajs:
        if not t.spec.env_seed % 2:
            assert t.error == "" and t.num_turns >= 1 and len(t.tokens) <= BUDGET


def test_the_learner_batch_width_is_bounded_by_the_budget(played):
    _, trajs, _ = played
    batch = collate(trajs, 0, [0.0] * len(trajs), [not t.error for t in trajs])
    assert batch.tokens_BT.shape[1] <= BUDGET
