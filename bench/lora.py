"""LoRA against full fine-tuning on SmolLM2-135M-Instruct with the `smollm2` preset's task, and the workers'
merged-vs-unmerged decoding choice.

    python bench/lora.py decode [--batch 16 --tokens 32]
    python bench/lora.py runs [--root DIR] [--rl-steps 6] [--eval-episodes 50] [--json out.json] [key=value ...]

`decode`: greedy tokens/s of the same adapter on the same base, two ways, both through transformers' forward:
peft's unmerged layers (three matmuls per adapted layer) and the adapter merged into the weights; and how often
they pick the same tokens. (steprl's fused forward, what a worker runs, reads plain weight matrices, so it can
only decode merged: `agents/fast_forward.py`.)

`runs`: two fresh `steprl train smollm2 stages=[warmup,rl]` subprocesses, equal steps, one with full weights and
one with `model.lora.r=16` (LoRA at 10x the learning rates, the usual rule for adapters); per run the held-out
success after warm-up and after RL, the driver's peak memory, the learner's time per RL step (step time minus
play time: the pool is inline), the bytes one weight sync sends, and the final checkpoint's size on disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seeds import cpu_model

LORA = ["model.lora.r=16", "model.lora.alpha=32", "warmup.lr=2e-3", "learner.lr=3e-4"]
"""The LoRA run: rank 16, scale 2, learning rates 10x the preset's full fine-tuning ones."""


def _smollm2():
    """SmolLM2-135M-Instruct from its packaged GGUF and its tokenizer (steprl's own loading path)."""
    from steprl.agents.config import ModelConfig, TokenizerConfig
    from steprl.agents.policy import build_policy
    from steprl.config import load_config

    cfg = load_config("smollm2")
    return build_policy(ModelConfig(path=cfg.model.path), TokenizerConfig(path=cfg.tokenizer.path), 0)


def decode(args: argparse.Namespace) -> dict:
    """tokens/s of unmerged and merged greedy decoding, and their token agreement."""
    import torch

    from steprl.agents.config import LoraConfig
    from steprl.agents.lora import add_lora, merged_copy
    from steprl.learners.trainable import trainable_state

    torch.set_num_threads(args.threads)
    policy = _smollm2()
    tok = policy.tokenizer
    model = add_lora(policy.model, LoraConfig(r=16, alpha=32.0), seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: B away from zero
        for k, v in trainable_state(model).items():
            if ".lora_B." in k:
                v.copy_(torch.randn(v.shape, generator=gen) * 0.01)
    merged = merged_copy(model).eval()
    text = tok.apply_chat_template([{"role": "user", "content": "What is 47 times 83?"}], add_generation_prompt=True,
                                   tokenize=False)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt] * args.batch)
    out = {}
    for name, m in (("unmerged (peft)", model), ("merged", merged)):
        m.generate(ids[:1], max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)  # warm
        t0 = time.perf_counter()
        with torch.no_grad():
            seq = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens,
                             min_new_tokens=args.tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        dt = time.perf_counter() - t0
        out[name] = {"tokens_per_s": args.batch * args.tokens / dt, "tokens": seq[:, ids.shape[1]:].tolist()}
    ref = out["unmerged (peft)"]["tokens"]
    for row in out.values():
        same = sum(a == b for r1, r2 in zip(row["tokens"], ref) for a, b in zip(r1, r2))
        row["same_tokens_as_unmerged"] = same / (args.batch * args.tokens)
        del row["tokens"]
    return {"cpu": cpu_model(), "threads": args.threads, "batch": args.batch, "new_tokens": args.tokens, "ways": out}


def _run(name: str, root: Path, overrides: list[str]) -> dict:
    """One `steprl train smollm2` subprocess; its row."""
    cmd = ["steprl", "train", "smollm2", f"run.root={root}", f"run.name={name}", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"name": name, "wall_s": wall, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    run_dir = root / name
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r.get("stage") == "rl" and "step_time_s" in r]
    learn = [r["step_time_s"] - r.get("play_time_s", 0.0) for r in rl]
    final = Path(summary["final_checkpoint"])
    return {
        "name": name, "wall_s": wall, "peak_rss_gb": summary.get("driver_peak_rss_gb"),
        "warmup_success": summary["stages"]["warmup"].get("success"), "rl_success": summary["stages"]["rl"]["success"],
        "rl_train_success": [round(r["success_rate"], 3) for r in rl],
        "learner_step_s": sum(learn) / max(1, len(learn)), "sync_bytes": _sync_bytes(final / "model"),
        "checkpoint_bytes": sum(p.stat().st_size for p in final.rglob("*") if p.is_file()),
    }


def _sync_bytes(model_dir: Path) -> int:
    """Bytes one policy version sends to the workers (the trainable state: what `channel/weights_bytes` counts
    through Ray, asserted equal in tests/integration/pipeline/test_lora.py)."""
    from steprl.agents.policy import load_policy
    from steprl.learners.trainable import trainable_state
    from steprl.run.learning.channels import state_bytes

    return state_bytes(trainable_state(load_policy(model_dir).model))


def runs(args: argparse.Namespace) -> dict:
    """Full fine-tuning, then LoRA, at equal steps."""
    root = Path(args.root or tempfile.mkdtemp(prefix="lora-bench-"))
    common = ["stages=[warmup,rl]", f"rl.steps={args.rl_steps}", f"rl.checkpoint_every={args.rl_steps}",
              f"eval.episodes={args.eval_episodes}", *args.overrides]
    out = {"cpu": cpu_model(), "common": common, "lora": LORA, "rows": []}
    for name, extra in (("full", []), ("lora", LORA)):
        row = _run(name, root, [*common, *extra])
        print(json.dumps(row), flush=True)
        out["rows"].append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("decode")
    d.add_argument("--batch", type=int, default=16)
    d.add_argument("--tokens", type=int, default=32)
    d.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("runs")
    r.add_argument("--root")
    r.add_argument("--rl-steps", type=int, default=6)
    r.add_argument("--eval-episodes", type=int, default=50)
    r.add_argument("overrides", nargs="*")
    for q in (d, r):
        q.add_argument("--json")
    args = p.parse_args()
    result = decode(args) if args.mode == "decode" else runs(args)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
