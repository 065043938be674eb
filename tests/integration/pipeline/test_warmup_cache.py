"""The warm-up cache returns exactly what a fresh warm-up would, and only for the same inputs."""

from __future__ import annotations

from pathlib import Path

from digests import tree_digest

from steprl.pipeline import train

WARMUP_ONLY = ["stages=[warmup]", "warmup.cache=true", "warmup.steps=10"]


def test_cached_warmup_is_bitwise_the_fresh_one_and_keys_on_threads(smoke):
    fresh = train(smoke(*WARMUP_ONLY, "run.threads=1", name="fresh"))
    again = train(smoke(*WARMUP_ONLY, "run.threads=1", name="again"))
    other = train(smoke(*WARMUP_ONLY, "run.threads=2", name="other"))
    root = Path(smoke().run.root)
    assert fresh["stages"]["warmup"]["cached_from"] is None
    assert again["stages"]["warmup"]["cached_from"] is not None  # reused ...
    assert (
        tree_digest(root / "again", 0)["model/model.safetensors"]
        == tree_digest(root / "fresh", 0)["model/model.safetensors"]
    )
    assert other["stages"]["warmup"]["cached_from"] is None  # ... but never across thread counts (other float sums)
    assert len(list((root / ".warmup_cache").iterdir())) == 2


def test_demo_memo_serves_a_second_warmup_the_same_batches_without_rebuilding():
    from steprl.agents.policy import build_policy
    from steprl.config import load_config
    from steprl.run.loop.demos import DemoMemo, demo_batches

    cfg = load_config("smoke")
    tf = build_policy(cfg.model, cfg.tokenizer, 0).turn_format
    fresh = demo_batches(cfg.env.id, dict(cfg.env.kwargs), tf, 0, 4, 0.5)
    calls: list[int] = []

    def build(step):
        calls.append(step)
        return fresh(step)

    memo = DemoMemo()
    first = [memo.wrap(("k",), build)(k) for k in range(3)]
    second = [memo.wrap(("k",), build)(k) for k in range(4)]  # the student: same key, one step more
    assert second[:3] == first and calls == [0, 1, 2, 3]      # steps 0-2 served from the memo
    assert second == [demo_batches(cfg.env.id, dict(cfg.env.kwargs), tf, 0, 4, 0.5)(k) for k in range(4)]
    memo.wrap(("other",), build)(0)                            # another key: rebuilt, never mixed
    assert calls == [0, 1, 2, 3, 0]
