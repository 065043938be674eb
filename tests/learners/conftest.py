"""Shared fixtures for learner tests: a tiny deterministic Llama and trajectory builders."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from steprl.rollout.trajectory import EpisodeSpec, Trajectory

VOCAB = 16


def tiny_model(seed: int = 0, *, vocab: int = VOCAB, hidden: int = 32, scale: float = 0.3) -> LlamaForCausalLM:
    """A 1-layer Llama whose weights come from a local generator (global RNG left untouched): norms 1, matrices
    N(0, scale^2); intermediate size 2 x hidden."""
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.float()


def make_traj(index: int, tokens, mask, logps=None, reward: float = 0.0, group: int | None = None,
              member: int = 0, success: bool | None = None, error: str = "") -> Trajectory:
    """A Trajectory with the given tokens/mask/log-probs (zeros when None)."""
    spec = EpisodeSpec(step=0, index=index, group=index if group is None else group, member=member,
                       env_id="toy", env_seed=0, sample_key=index)
    logps = [0.0] * len(tokens) if logps is None else logps
    return Trajectory.build(spec=spec, policy_version=0, tokens=tokens, action_mask=mask, behavior_logprobs=logps,
                            reward=reward, turn_rewards=(), num_turns=1, finished=True, truncated=False,
                            tool_calls=0, tool_errors=0, success=bool(reward > 0.5) if success is None else success,
                            error=error)


def sample_batch(model, n_groups: int, group_size: int, step: int, seed: int = 0, temperature: float = 1.0):
    """Toy episodes: prompt [3, 4], action a, observation 9, action b; reward 1 iff a < 8.

    Tokens are sampled with a local generator keyed by (seed, step); behaviour log-probs are
    the model's tempered fp32 log-probs of the sampled tokens.
    """
    g = torch.Generator().manual_seed(seed * 100003 + step)
    out = []
    with torch.no_grad():
        for gi in range(n_groups):
            for m in range(group_size):
                toks, lps = [3, 4], [0.0, 0.0]
                for extra in (9, None):
                    logits = model(input_ids=torch.tensor([toks])).logits[0, -1].float() / temperature
                    logp = torch.log_softmax(logits, -1)
                    a = int(torch.multinomial(logp.exp(), 1, generator=g))
                    toks.append(a)
                    lps.append(float(logp[a]))
                    if extra is not None:
                        toks.append(extra)
                        lps.append(0.0)
                mask = [0, 0, 1, 0, 1]
                reward = 1.0 if toks[2] < 8 else 0.0
                out.append(make_traj(gi * group_size + m, toks, mask, lps, reward, group=gi, member=m))
    return out


@pytest.fixture(autouse=True)
def _deterministic():
    """Deterministic kernels and one intra-op thread (tiny matmuls on a busy 2-core box crawl with 2)."""
    prev, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(prev)
    torch.set_num_threads(threads)


@pytest.fixture
def new_model():
    """Factory: tiny_model(seed)."""
    return tiny_model


@pytest.fixture
def traj():
    """Factory: make_traj(index, tokens, mask, logps, reward, group, ...)."""
    return make_traj


@pytest.fixture
def toy_batch():
    """Factory: sample_batch(model, n_groups, group_size, step, seed, temperature)."""
    return sample_batch
