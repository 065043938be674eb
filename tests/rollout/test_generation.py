"""GenerationBatch: replay, batch-row invariance, log-prob fidelity, stops, masking of padding."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from steprl.rollout.backends.hf import GenerationBatch
from steprl.rollout.sampler import SamplingParams, filtered_logprobs
from steprl.run.machine.kernels import PINNED_KEYS

VOWELS = list("aeiou")


def episode(policy, keys, params, order=None, stops=None):
    """Two turns for 4 rows of different prompt lengths; row 2 sits out turn 1. Returns (results, batch)."""
    tf = policy.turn_format
    specs = [("sys", "What is 12*7?"), ("a much longer system prompt here", "q"), ("", "x"), ("s", "tools: calc")]
    order = order or list(range(len(specs)))
    prompts = [tf.prompt_ids(*specs[i]) for i in order]
    gb = GenerationBatch(policy.model, prompts, [keys[i] for i in order], params, policy.tokenizer.pad_token_id)
    n = len(order)
    stops = stops or [VOWELS] * n
    r0 = gb.generate_turn([True] * n, [0] * n, [12 + 3 * i for i in order], stops, tf.decode)
    for b, i in enumerate(order):
        gb.append(b, tf.observation_ids(f"<result>{'7' * (1 + 4 * i)}</result>"))
    r1 = gb.generate_turn([i != 2 for i in order], [1] * n, [20] * n, stops, tf.decode)
    return [(r0[b], r1[b]) for b in range(n)], gb


def as_json(results) -> str:
    """Tokens, stop reasons and log-probs as exact hex floats."""
    return json.dumps([[(r.tokens, [x.hex() for x in r.logprobs], r.stop_reason) for r in pair] for pair in results])


KEYS = [11, 2**64 - 3, 5, 123456789]
PARAMS = SamplingParams(temperature=0.8, top_k=40, top_p=0.95)


def test_replay_bitwise_in_fresh_process(policy):
    # results may depend on the thread count (docs/architecture.md#determinism): pin the same settings on both sides
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = as_json(episode(policy, KEYS, PARAMS)[0])
    finally:
        torch.set_num_threads(prev)
    det, here_dir = torch.are_deterministic_algorithms_enabled(), str(__import__("pathlib").Path(__file__).parent)
    code = (
        f"import sys, torch; torch.set_num_threads(1); torch.use_deterministic_algorithms({det!r})\n"
        f"sys.path.insert(0, {here_dir!r})\n"
        "from steprl.agents.config import ModelConfig, TokenizerConfig\nfrom steprl.agents.policy import build_policy\n"
        "from steprl.rollout.sampler import SamplingParams\n"
        "import test_generation as t, conftest as c\n"
        "p = build_policy(ModelConfig(**c.TINY), TokenizerConfig(), seed=0)\n"
        "print(t.as_json(t.episode(p, t.KEYS, t.PARAMS)[0]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        # a bare environment, except the kernel pins this process computes under (tests/conftest.py): other
        # kernel paths give other last bits, which is what run.kernels is about, not what this test checks
        env={"PYTHONHASHSEED": "99", "PATH": "", **{k: os.environ[k] for k in PINNED_KEYS if k in os.environ}},
    )
    assert out.stdout.strip().splitlines()[-1] == here
    assert here != as_json(episode(policy, [k + 1 for k in KEYS], PARAMS)[0])  # keys matter


def test_row_permutation_invariant(policy):
    base, _ = episode(policy, KEYS, PARAMS)
    order = [2, 0, 3, 1]
    perm, _ = episode(policy, KEYS, PARAMS, order=order)
    for b, i in enumerate(order):
        for a, c in zip(base[i], perm[b]):
            assert a.tokens == c.tokens and a.stop_reason == c.stop_reason
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(c.logprobs), atol=1e-6, rtol=0)


def test_logprobs_match_full_forward_and_row_tokens_exact(policy):
    results, gb = episode(policy, KEYS, PARAMS)
    tf = policy.turn_format
    specs_prompts = [tf.prompt_ids("sys", "What is 12*7?"), tf.prompt_ids("a much longer system prompt here", "q"),
                     tf.prompt_ids("", "x"), tf.prompt_ids("s", "tools: calc")]
    for i, (r0, r1) in enumerate(results):
        obs = tf.observation_ids(f"<result>{'7' * (1 + 4 * i)}</result>")
        expect = specs_prompts[i] + r0.tokens + obs + r1.tokens
        assert gb.row_tokens(i) == expect  # no padding, nothing lost, nothing re-tokenized
        if i == 2:
            assert r1.tokens == [] and r1.stop_reason == "inactive"
        with torch.no_grad():
            logits = policy.model(torch.tensor([expect])).logits[0].float()
        lp = filtered_logprobs(logits, PARAMS)
        starts = [len(specs_prompts[i]), len(specs_prompts[i]) + len(r0.tokens) + len(obs)]
        for start, r in zip(starts, (r0, r1)):
            for j, (tok, rec) in enumerate(zip(r.tokens, r.logprobs)):
                ref = lp[start + j - 1, tok].item()
                assert torch.isfinite(torch.tensor(ref)), "a filtered token was emitted"
                assert abs(ref - rec) <= 1e-5, (i, j, ref, rec)


def test_stops_exactly_at_stop_string(policy):
    tf = policy.turn_format
    results, _ = episode(policy, KEYS, SamplingParams())
    seen_stop = False
    for pair in results:
        for r in pair:
            if r.stop_reason == "inactive":
                continue
            text = tf.decode(r.tokens)
            prefixes = [tf.decode(r.tokens[:k]) for k in range(1, len(r.tokens))]
            assert not any(v in p for p in prefixes for v in VOWELS)  # no earlier token ended a stop string
            if r.stop_reason == "stop":
                seen_stop = True
                assert any(v in text for v in VOWELS)  # a stop string ends inside (or at the end of) the last token
            else:
                assert r.stop_reason == "length" and not any(v in text for v in VOWELS)
    assert seen_stop


def test_multichar_stop_string(policy):
    tf = policy.turn_format
    prompt = tf.prompt_ids("sys", "go")
    free = GenerationBatch(policy.model, [prompt], [42], SamplingParams(), 0).generate_turn(
        [True], [0], [30], [[]], tf.decode
    )[0]
    assert free.stop_reason == "length" and len(free.tokens) == 30
    stop = tf.decode(free.tokens[:14])[-3:]
    first = min(k for k in range(3, 31) if tf.decode(free.tokens[:k]).endswith(stop))
    got = GenerationBatch(policy.model, [prompt], [42], SamplingParams(), 0).generate_turn(
        [True], [0], [30], [["zzzz", stop]], tf.decode
    )[0]
    assert got.stop_reason == "stop" and got.tokens == free.tokens[:first]
    assert got.logprobs == free.logprobs[:first]


def test_greedy_matches_argmax_of_full_forward(policy):
    tf = policy.turn_format
    prompts = [tf.prompt_ids("sys", "q1"), tf.prompt_ids("longer system", "question two")]
    params = SamplingParams(greedy=True)
    gb = GenerationBatch(policy.model, prompts, [1, 2], params, 0)
    res = gb.generate_turn([True, True], [0, 0], [15, 15], [[], []], tf.decode)
    for b in range(2):
        seq = list(prompts[b])
        for tok in res[b].tokens:
            with torch.no_grad():
                assert tok == int(policy.model(torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(tok)


def test_inactive_and_zero_budget(policy):
    tf = policy.turn_format
    gb = GenerationBatch(policy.model, [tf.prompt_ids("s", "a"), tf.prompt_ids("s", "bb")], [1, 2], SamplingParams(), 0)
    res = gb.generate_turn([False, True], [0, 0], [5, 0], [[], []], tf.decode)
    assert res[0].tokens == [] and res[0].stop_reason == "inactive"
    assert res[1].tokens == [] and res[1].stop_reason == "length"
    assert gb.row_tokens(0) == tf.prompt_ids("s", "a")


def test_sampling_frequencies_end_to_end(policy):
    """First-token frequencies over 3000 sample keys match softmax(logits / T) (chi-square, df = V - 1)."""
    tf = policy.turn_format
    prompt = tf.prompt_ids("sys", "q")
    n, T = 3000, 0.3  # low temperature: the tiny random model's logits become clearly non-uniform
    params = SamplingParams(temperature=T)
    gb = GenerationBatch(policy.model, [prompt] * n, list(range(n)), params, 0)
    res = gb.generate_turn([True] * n, [0] * n, [1] * n, [[]] * n, tf.decode)
    with torch.no_grad():
        logits = policy.model(torch.tensor([prompt])).logits[0, -1].float()
    p = torch.softmax(logits.double() / T, dim=-1)
    counts = torch.bincount(torch.tensor([r.tokens[0] for r in res]), minlength=p.numel()).double()
    keep = p * n >= 5  # pool rare ids into one bin
    expect = torch.cat([p[keep] * n, (p[~keep] * n).sum()[None]])
    got = torch.cat([counts[keep], counts[~keep].sum()[None]])
    chi2 = ((got - expect) ** 2 / expect.clamp_min(1e-9)).sum().item()
    df = int(keep.sum())
    assert df >= 5
    assert chi2 < df + 4 * (2 * df) ** 0.5 + 10, (chi2, df)
