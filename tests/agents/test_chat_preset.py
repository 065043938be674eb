"""configs/chat.yaml on a small Qwen2 chat model directory, through the CLI: warm-up, RL, replay and eval.

Checks the issue's "done when" on real rollouts: no action span holds the end-of-turn token except as
its last token and no pad/bos/<|im_start|> at all; the first prompt is the template's own rendering with
the tools; tool results use the tool role; at step 0 |logprob_gap| < 1e-6 under top-k + top-p.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer

from steprl.agents.chat import make_turn_format
from steprl.envs.tools import get_tool
from steprl.rollout.store import read_step

REPO = Path(__file__).parents[2]


def _cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "steprl.cli", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def _spans(tokens, mask):
    """Action spans (lists of ids) of one trajectory."""
    spans, cur = [], []
    for t, m in zip(tokens, mask):
        if m:
            cur.append(t)
        elif cur:
            spans, cur = spans + [cur], []
    return spans + ([cur] if cur else [])


def test_chat_preset_end_to_end(qwen_dir, tmp_path):
    root = tmp_path / "runs"
    _cli("train", str(REPO / "configs" / "chat.yaml"), f"model.path={qwen_dir}", f"tokenizer.path={qwen_dir}",
         "stages=[warmup,rl,eval]", "warmup.steps=2", "warmup.batch_size=4", "rl.steps=2", "rl.checkpoint_every=1",
         "rollout.groups=2", "rollout.group_size=2", "rollout.micro_batch=4", "rollout.sampling.max_new_tokens=24",
         "rollout.sampling.top_p=0.9", "rollout.sampling.top_k=50", "eval.episodes=4", "eval.micro_batch=4",
         f"run.root={root}")
    run = root / "chat"
    tok = AutoTokenizer.from_pretrained(qwen_dir)
    fmt = make_turn_format(tok)
    trajs = read_step(run / "rollouts", 0) + read_step(run / "rollouts", 1)
    assert trajs
    for tr in trajs:
        for span in _spans(tr.tokens, tr.action_mask):
            assert not set(span) & set(fmt.banned_ids)
            assert all(t not in fmt.stop_token_ids for t in span[:-1])
    first = trajs[0]
    text = fmt.decode(first.tokens[: first.prompt_len])
    spec = {"type": "function", "function": get_tool("calc").spec()}
    assert text.startswith("<|im_start|>system\n") and json.dumps(spec) in text and text.endswith(
        "<|im_start|>user\n" + text.split("<|im_start|>user\n")[1])
    full = fmt.decode(first.tokens)
    if "<tool_response>" in full:
        assert "<|im_start|>user\n<tool_response>\n" in full
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    gaps = [m["logprob_gap"] for m in metrics if "logprob_gap" in m]
    assert gaps and abs(gaps[0]) < 1e-6
    out = _cli("replay", str(run), "--step", "1")
    assert "identical" in out.lower() or "match" in out.lower(), out[-1000:]
