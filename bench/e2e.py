"""Benchmark: RL steps per minute and end-to-end completion tokens/s of the real training loop.

Runs `steprl.pipeline.train` on the quickstart preset with `stages=[rl]` (no warm-up: a
random-init policy, which is fine for throughput; it plays every turn to the 32-token budget,
so this is an upper bound on a trained policy's work) for --steps steps in a temporary run root,
with the preset's executor (Ray, 2 workers), checkpoints every `rl.checkpoint_every` = 10 steps,
and the held-out evaluation shrunk to --eval-episodes (it runs after the loop and is not timed).

Timing (this script wraps MetricsLogger.log and RunState.held_out with timestamps; no library
change): the window runs from the end of step 0 (Ray and the actors are up, everything warm) to
the start of the held-out evaluation, so it holds steps 1..N-1 with their generation, learner
update, weight broadcast, rollout store writes and every checkpoint (the one after the last step
included). steps/min = (N-1) / window; completion tok/s = generated tokens of those steps / window.
Also reported: the whole rl stage's wall time including Ray start-up, and the mean per-step
split (play vs the rest) from metrics.jsonl. Prints a table and writes bench/results/e2e.json.

    python bench/e2e.py [--steps 20] [--executor ray|inline] [--variants sync,pipelined,...] [--quick]
    python bench/e2e.py --to-target RUN_DIR [--target 0.5]   # wall time to a held-out success target

`--to-target` reads RUN_DIR/summary.json of a full quickstart run (e.g. `steprl train quickstart`)
and reports the cumulative wall time of the stages up to the first whose held-out success reaches
--target. Held-out success is measured only at the end of each stage, so the time has stage resolution.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _common import machine_meta, markdown_table, write_result

VARIANTS = {
    # name: quickstart overrides (thread placement and pipelining; the data of a variant never depends on timing)
    "sync": ["rollout.staleness=0"],
    "pipelined": ["rollout.staleness=1"],
    "pipelined-l1": ["rollout.staleness=1", "run.threads=1"],
    "sync-w1-l1": ["rollout.staleness=0", "run.threads=1", "rollout.workers=1", "rollout.micro_batch=64"],
    "pipelined-w1-l1": ["rollout.staleness=1", "run.threads=1", "rollout.workers=1", "rollout.micro_batch=64"],
}
"""Loop configurations compared in one command; the first is the baseline of the ratio column."""


def run_steps(steps: int, executor: str, eval_episodes: int, root: str, extra: list[str]) -> dict:
    """Train `steps` RL steps of the quickstart preset (stages=[rl]) under `root`; returns timings and metrics."""
    from steprl.config import load_config
    from steprl.pipeline import train
    from steprl.run.loop.state import RunState
    from steprl.run.reporting.metrics import MetricsLogger, read_metrics

    over = [
        "stages=[rl]",
        f"rl.steps={steps}",
        f"run.root={root}",
        "run.name=bench_e2e",
        f"rollout.executor={executor}",
        f"eval.episodes={eval_episodes}",
        *extra,
    ]
    cfg = load_config("quickstart", over)
    marks: dict[str, list[float]] = {"log": [], "held_out": []}
    orig_log, orig_held_out = MetricsLogger.log, RunState.held_out

    def log(self, step, stage, metrics):
        orig_log(self, step, stage, metrics)
        if stage == "rl":
            marks["log"].append(time.perf_counter())

    def held_out(state, *args):
        marks["held_out"].append(time.perf_counter())
        return orig_held_out(state, *args)

    MetricsLogger.log, RunState.held_out = log, held_out
    try:
        t0 = time.perf_counter()
        summary = train(cfg)
        total = time.perf_counter() - t0
    finally:
        MetricsLogger.log, RunState.held_out = orig_log, orig_held_out
    rows = [r for r in read_metrics(Path(root) / "bench_e2e" / "metrics.jsonl") if r.get("stage") == "rl"]
    end = marks["held_out"][0] if marks["held_out"] else t0 + total  # no held-out call: the whole train() call
    window = end - marks["log"][0]
    later = rows[1:]
    gen = sum(r.get("generated_tokens", 0) for r in later)
    return {
        "steps": steps,
        "executor": executor,
        "workers": cfg.rollout.workers,
        "episodes_per_step": cfg.rollout.episodes_per_step,
        "checkpoint_every": cfg.rl.checkpoint_every,
        "window_s": window,
        "timed_steps": len(later),
        "steps_per_min": 60 * len(later) / window,
        "completion_tok_s": gen / window,
        "generated_tokens_per_step": gen / max(1, len(later)),
        "mean_play_s": sum(r.get("play_time_s", float("nan")) for r in later) / max(1, len(later)),
        "mean_step_time_s": sum(r.get("step_time_s", float("nan")) for r in later) / max(1, len(later)),
        "first_step_s": rows[0].get("step_time_s"),
        "rl_stage_wall_s": summary["stages"]["rl"]["wall_s"],
        "train_call_s": total,
        "threads": cfg.run.threads,
        "worker_threads": cfg.rollout.worker_threads,
        "staleness": cfg.rollout.staleness,
    }


def to_target(run_dir: Path, target: float) -> dict:
    """Cumulative stage wall time until held-out success >= target, from RUN_DIR/summary.json."""
    summary = json.loads((run_dir / "summary.json").read_text())
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    order = summary.get("completed") or list(summary.get("stages", {}))
    cum, reached, per_stage = 0.0, None, []
    for name in order:
        st = summary["stages"].get(name, {})
        cum += float(st.get("wall_s", 0.0))
        per_stage.append({"stage": name, "wall_s": st.get("wall_s"), "cumulative_s": cum, "success": st.get("success"),
                          "success_ci": st.get("success_ci")})
        if reached is None and st.get("success") is not None and st["success"] >= target:
            reached = {"stage": name, "wall_s": cum}
    return {"run_dir": str(run_dir), "target": target, "reached": reached, "stages": per_stage,
            "run_wall_s": summary.get("wall_s"), "params": summary.get("params"), "config_yaml": config}


def main() -> None:
    """Run the loop (or read a finished run with --to-target) and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--executor", type=str, default="ray", choices=["ray", "inline"])
    ap.add_argument("--eval-episodes", type=int, default=8, help="held-out episodes after the loop (not timed)")
    ap.add_argument(
        "--to-target",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="report time-to-target of a finished run instead",
    )
    ap.add_argument("--target", type=float, default=0.5, help="held-out success target for --to-target")
    ap.add_argument("--quick", action="store_true", help="smoke check: 4 steps, checkpoint every 2")
    ap.add_argument(
        "--variants", type=str, default=",".join(VARIANTS), help=f"loop configurations: {', '.join(VARIANTS)}"
    )
    ap.add_argument("overrides", nargs="*", help="extra quickstart overrides, e.g. rollout.workers=1")
    args = ap.parse_args()
    meta = machine_meta(2)
    if args.to_target is not None:
        res = to_target(args.to_target, args.target)
        print(
            markdown_table(
                res["stages"],
                [
                    ("stage", "stage", ""),
                    ("wall_s", "wall s", ".1f"),
                    ("cumulative_s", "cumulative s", ".1f"),
                    ("success", "held-out success", ".3f"),
                ],
            )
        )
        r = res["reached"]
        print(
            f"target {args.target}: "
            + (f"reached after stage {r['stage']} at {r['wall_s']:.1f} s" if r else "not reached")
        )
        print("wrote", write_result("e2e_to_target", {"meta": meta, **res}))
        return
    steps = 4 if args.quick else args.steps
    extra = (["rl.checkpoint_every=2"] if args.quick else []) + list(args.overrides)
    rows = []
    for name in args.variants.split(","):
        name = name.strip()
        with tempfile.TemporaryDirectory(prefix="steprl-e2e-") as root:
            res = run_steps(steps, args.executor, args.eval_episodes, root, [*VARIANTS[name], *extra])
        torch.set_num_threads(res["threads"])
        rows.append({"variant": name, **res})
        print(
            f"{name}: {res['steps_per_min']:.1f} steps/min, {res['completion_tok_s']:.0f} completion tok/s", flush=True
        )
    base = rows[0]["completion_tok_s"]
    for r in rows:
        r["vs_first"] = r["completion_tok_s"] / base if base else None
    cols = [
        ("variant", "variant", ""),
        ("executor", "executor", ""),
        ("workers", "workers", "d"),
        ("threads", "learner threads", "d"),
        ("staleness", "staleness", "d"),
        ("timed_steps", "timed steps", "d"),
        ("steps_per_min", "steps/min", ".1f"),
        ("completion_tok_s", "completion tok/s", ".0f"),
        ("mean_play_s", "wait for play s/step", ".2f"),
        ("mean_step_time_s", "step s (no ckpt)", ".2f"),
        ("rl_stage_wall_s", "rl stage wall s", ".1f"),
        ("vs_first", f"vs {rows[0]['variant']}", ".2f"),
    ]
    print(markdown_table(rows, cols))
    print("wrote", write_result("e2e", {"meta": meta | {"quick": args.quick, "overrides": extra}, "results": rows}))


if __name__ == "__main__":
    main()
