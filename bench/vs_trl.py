"""Benchmark: steprl vs TRL's GRPOTrainer on the same GRPO work, in the same command.

Same model: the quickstart Llama (or --model 10m) built from config with steprl's char
tokenizer (`build_policy`), saved with `save_policy` into a temp dir; TRL loads it from that path
(offline), steprl too (`load_policy`). Same prompts: RL steps 0..N-1 of the quickstart preset with
Calculator `max_turns=1` (single turn, 3-digit operands), 8 groups x 8 = 64 episodes a step;
TRL gets the exact prompt text steprl renders (system prompt + question) as plain-text prompts,
8 prompts x `num_generations=8`. Same reward: the compact protocol's parse of the completion,
1.0 iff the answer equals the exact result (what the env scores). Same budget: 32 completion
tokens (TRL `max_completion_length=32` with `min_new_tokens=32`, so EOS never ends a row early;
steprl `max_new_tokens=32`, a random-init model almost never emits a stop string). Like with like:
`--dtype float32` (default) runs both in float32 (TRL `bf16=False`); `--dtype bfloat16` runs steprl with
`learner.dtype=rollout.dtype=bfloat16` and TRL with `bf16=True` (accelerate's CPU autocast), both with float32
master weights; `--trl-dtype float32` keeps TRL in float32 against a bf16 steprl (the issue-18 target "bf16 >= 2.5x
TRL float32" on an AMX CPU). 2 torch threads, `use_cpu=True`, `gradient_checkpointing=False`, beta 0 (no
reference model), 1 iteration per generation, lr 1e-4, clip 0.2/0.28, grad clip 1.0, temperature 1.

steprl side: `RolloutPool` (inline, one generation micro-batch of 64) + `rl_trainer(...).update`
(learner micro-batch 64) + `set_weights`, the loop of `steprl.stages.rl` (`run_steps` with `RLSteps`) without
checkpoints or rollout files. TRL side: `trainer.train()` with `save_strategy="no"`.
Step 0 is warm-up on both sides; steps 1..N-1 are timed (per-step timestamps). Reported:
completion tokens/s (generated tokens of the timed steps / their wall time) and the ratio.
Prints a table and writes bench/results/vs_trl.json.

    pip install -e '.[bench]'          # trl, datasets, accelerate
    python bench/vs_trl.py [--steps 20] [--model quickstart|10m] [--dtype float32|bfloat16] [--trl-dtype ...] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from _common import MODELS, machine_meta, markdown_table, write_result  # noqa: E402

from steprl.agents.config import TokenizerConfig  # noqa: E402
from steprl.agents.policy import build_policy, load_policy, save_policy  # noqa: E402
from steprl.config import load_config  # noqa: E402
from steprl.envs.protocol import Answer, get_protocol  # noqa: E402
from steprl.learners.trainer import rl_trainer  # noqa: E402
from steprl.rollout.plan import plan_step  # noqa: E402
from steprl.rollout.workers import RolloutPool, WorkerSpec  # noqa: E402

COMPLETION = 32


def bench_config(model: str, steps: int, dtype: str = "float32"):
    """The quickstart preset as a single-turn, inline, 64-episode, 32-token GRPO step in `dtype`."""
    mc = MODELS[model]()
    over = [f"learner.dtype={dtype}", f"rollout.dtype={dtype}", "env.kwargs.max_turns=1",
            "rollout.executor=inline", "rollout.micro_batch=64", "rollout.groups=8",
            "rollout.group_size=8", f"rollout.sampling.max_new_tokens={COMPLETION}", "learner.micro_batch=64",
            "learner.lr=1e-4", f"rl.steps={steps}"]
    over += [f"model.{k}={getattr(mc, k)}" for k in ("layers", "hidden", "heads", "kv_heads", "intermediate")]
    return load_config("quickstart", over)


def prompts(cfg, policy, steps: int) -> list[dict]:
    """One row per (step, group): the exact prompt text steprl plays and the gold answer, in step order."""
    import gymnasium as gym

    import steprl.envs  # noqa: F401

    env = gym.make(cfg.env.id, **dict(cfg.env.kwargs))
    rows = []
    for step in range(steps):
        for s in plan_step(cfg, step)[:: cfg.rollout.group_size]:
            obs, info = env.reset(seed=s.env_seed)
            ids = policy.turn_format.prompt_ids(info.get("system", ""), obs)
            text = policy.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            rows.append({"prompt": text, "answer": env.unwrapped.task_for_seed(s.env_seed).answer, "n_ids": len(ids)})
    return rows


VARIANTS = {
    # name: (executor, rollout workers, threads per worker, learner threads, staleness)
    "sync-inline": ("inline", 1, 2, 2, 0),
    "sync-ray2": ("ray", 2, 1, 2, 0),
    "pipe-ray2": ("ray", 2, 1, 2, 1),
    "pipe-ray2-l1": ("ray", 2, 1, 1, 1),
    "pipe-ray1-l1": ("ray", 1, 1, 1, 1),
}
"""steprl configurations compared with TRL: where rollouts run, how threads are placed, staleness."""


def run_steprl(cfg, model_dir: str, steps: int, variant: str) -> dict:
    """The loop of `steprl.stages.rl` (`run_steps` with `RLSteps`), without checkpoints or rollout files,
    under one VARIANTS entry.

    Staleness 1: step N+1 is submitted to the pool (version N) before the learner trains on step N,
    so generation and learning overlap; staleness 0: play, then update, strictly in turn.
    """
    from steprl.rollout.plan import rollout_version

    executor, workers, wthreads, lthreads, staleness = VARIANTS[variant]
    torch.set_num_threads(lthreads)
    cfg.rollout.executor, cfg.rollout.workers, cfg.rollout.staleness = executor, workers, staleness
    cfg.rollout.micro_batch = 64 if workers == 1 else 32
    policy = load_policy(model_dir)
    spec = WorkerSpec(policy.model.config, policy.tokenizer, dict(cfg.env.kwargs), cfg.rollout.sampling, wthreads)
    pool = RolloutPool(spec, cfg.rollout)
    learner = rl_trainer(policy.model, cfg.learner, temperature=cfg.rollout.sampling.temperature, total_steps=steps,
                      pad_id=policy.tokenizer.pad_token_id)
    pool.set_weights(0, learner.weights())
    pending = pool.submit(plan_step(cfg, 0))
    marks, tokens, rewards = [time.perf_counter()], [], []
    try:
        for step in range(steps):
            trajs = pending.result()
            if staleness and step + 1 < steps:
                pool.set_weights(rollout_version(step + 1, 1), learner.weights())
                pending = pool.submit(plan_step(cfg, step + 1))
            stats = learner.update(trajs)
            if not staleness and step + 1 < steps:
                pool.set_weights(step + 1, learner.weights())
                pending = pool.submit(plan_step(cfg, step + 1))
            marks.append(time.perf_counter())
            tokens.append(sum(t.num_action_tokens for t in trajs))
            rewards.append(stats["reward_mean"])
    finally:
        pool.close()
    return summarize(f"steprl {variant}", marks, tokens, rewards)


def run_trl(cfg, model_dir: str, rows: list[dict], steps: int, threads: int, out_dir: str,
            dtype: str = "float32") -> dict:
    """TRL GRPOTrainer on the same model, prompts and reward (`dtype` bfloat16: `bf16=True`, CPU autocast with
    float32 weights); per-step timestamps from a callback."""
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    proto = get_protocol(cfg.env.kwargs.get("format", "hermes"))

    def reward(completions, answer, **_):
        out = []
        for text, gold in zip(completions, answer):
            parsed = proto.parse(text)
            out.append(1.0 if isinstance(parsed, Answer) and parsed.text.strip() == str(gold).strip() else 0.0)
        return out

    marks: list[float] = []
    logs: list[dict] = []

    class Clock(TrainerCallback):
        """Timestamps at train begin and every step end; the step's logged metrics."""

        def on_train_begin(self, args, state, control, **kw):
            torch.set_num_threads(threads)  # after accelerate's set-up, before the first step
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                logs_list.append(dict(logs))

    logs_list = logs
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    args = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=cfg.rollout.episodes_per_step,
        num_generations=cfg.rollout.group_size,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        max_completion_length=COMPLETION,
        generation_kwargs={"min_new_tokens": COMPLETION},
        temperature=cfg.rollout.sampling.temperature,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        epsilon=cfg.learner.clip_low,
        epsilon_high=cfg.learner.clip_high,
        learning_rate=cfg.learner.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=cfg.learner.grad_clip,
        adam_beta1=0.9,
        adam_beta2=0.999,
        max_steps=steps,
        use_cpu=True,
        bf16=dtype == "bfloat16",
        fp16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        shuffle_dataset=False,
        seed=cfg.run.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        model_init_kwargs={"dtype": torch.float32},
    )
    trainer = GRPOTrainer(
        model=model_dir,
        reward_funcs=reward,
        args=args,
        processing_class=tok,
        train_dataset=Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]),
        callbacks=[Clock()],
    )
    trainer.train()
    tokens = [round(lg["completions/mean_length"] * cfg.rollout.episodes_per_step) for lg in logs]
    rewards = [lg.get("reward", float("nan")) for lg in logs]
    res = summarize("trl" if dtype == "float32" else f"trl {dtype}", marks, tokens, rewards)
    res["trl_version"] = trl.__version__
    res["torch_threads_seen"] = torch.get_num_threads()
    return res


def summarize(name: str, marks: list[float], tokens: list[int], rewards: list[float]) -> dict:
    """Completion tokens/s over steps 1..N-1 (step 0 is warm-up)."""
    step_s = [b - a for a, b in zip(marks, marks[1:])]
    n = min(len(step_s), len(tokens))
    timed_s, timed_tok = sum(step_s[1:n]), sum(tokens[1:n])
    return {"system": name, "steps": n, "timed_steps": n - 1, "first_step_s": step_s[0] if step_s else None,
            "mean_step_s": timed_s / max(1, n - 1), "completion_tokens": timed_tok,
            "completion_tok_s": timed_tok / timed_s if timed_s else float("nan"),
            "tokens_per_step": timed_tok / max(1, n - 1), "mean_reward": sum(rewards) / max(1, len(rewards))}


def main() -> None:
    """Save the shared model, run steprl then TRL, print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--model", type=str, default="quickstart", choices=list(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", type=str, default="steprl,trl", help="run only some sides (debugging)")
    ap.add_argument("--quick", action="store_true", help="smoke check: 3 steps each")
    ap.add_argument(
        "--variants", type=str, default=",".join(VARIANTS), help=f"steprl configurations: {', '.join(VARIANTS)}"
    )
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="steprl's learner.dtype and rollout.dtype, and TRL's unless --trl-dtype")
    ap.add_argument("--trl-dtype", choices=("float32", "bfloat16"), default=None, help="default: --dtype")
    args = ap.parse_args()
    steps = 3 if args.quick else args.steps
    trl_dtype = args.trl_dtype or args.dtype
    torch.set_num_threads(args.threads)
    cfg = bench_config(args.model, steps, args.dtype)
    results = []
    with tempfile.TemporaryDirectory(prefix="steprl-vs-trl-") as tmp:
        policy = build_policy(cfg.model, TokenizerConfig(), cfg.run.seed)
        model_dir = os.path.join(tmp, "model")
        save_policy(policy, model_dir)
        rows = prompts(cfg, policy, steps)
        enc = len(policy.tokenizer(rows[0]["prompt"], add_special_tokens=False)["input_ids"])
        print(f"machine: {machine_meta(args.threads)['cpu']}; steprl {args.dtype}, TRL {trl_dtype}", flush=True)
        print(
            f"model {args.model}: {sum(p.numel() for p in policy.model.parameters()):,} params; prompt "
            f"{rows[0]['n_ids']} ids "
            f"(TRL re-tokenizes it to {enc}); {len(rows)} prompts",
            flush=True,
        )
        sides = [s.strip() for s in args.only.split(",")]
        for variant in (args.variants.split(",") if "steprl" in sides else []):
            results.append(run_steprl(cfg, model_dir, steps, variant.strip()))
            print(f"{results[-1]['system']}: {results[-1]['completion_tok_s']:.0f} completion tok/s", flush=True)
        if "trl" in sides:
            try:
                results.append(run_trl(cfg, model_dir, rows, steps, args.threads, os.path.join(tmp, "trl"),
                                       trl_dtype))
                print(f"trl: {results[-1]['completion_tok_s']:.0f} completion tok/s", flush=True)
            except ImportError as e:
                print(f"TRL not installed ({e}); pip install -e '.[bench]'")
    trl_row = next((r for r in results if r["system"].startswith("trl")), None)
    for r in results:
        r["vs_trl"] = r["completion_tok_s"] / trl_row["completion_tok_s"] if trl_row else None
    ours = [r for r in results if r["system"].startswith("steprl")]
    ratio = max(r["vs_trl"] for r in ours) if trl_row and ours else None
    cols = [("system", "system", ""), ("timed_steps", "timed steps", "d"), ("mean_step_s", "s/step", ".2f"),
            ("tokens_per_step", "completion tokens/step", ".0f"), ("completion_tok_s", "completion tok/s", ".0f"),
            ("mean_reward", "mean reward", ".3f"), ("vs_trl", "vs TRL", ".2f")]
    print(markdown_table(results, cols))
    if ratio is not None:
        print(f"best steprl ({args.dtype}) / TRL ({trl_dtype}) completion tok/s: {ratio:.2f}")
    meta = machine_meta(args.threads) | {"quick": args.quick, "model": args.model, "steps": steps,
                                         "dtype": args.dtype, "trl_dtype": trl_dtype}
    print("wrote", write_result("vs_trl", {"meta": meta, "results": results, "ratio_steprl_over_trl": ratio}))


if __name__ == "__main__":
    main()
