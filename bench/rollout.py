"""Benchmark: generated tokens/s of the rollout pool, and the fraction of the machine's compute ceiling.

For each model (the quickstart model from configs/quickstart.yaml and a ~10M-parameter Llama,
both random-init on the char vocabulary), each executor (inline in this process with --threads
torch threads; Ray with 1 and 2 actors of `rollout.worker_threads` = 1 thread each) and each
episode shape (single-turn: Calculator with max_turns=1; multi-turn: Calculator with
max_turns=3, the quickstart preset), the pool plays RL step 0 of the quickstart preset
(8 groups x 8 = 64 episodes, micro-batch 32, at most 32 new tokens per turn), once as warm-up,
then --repeats times; best of. A random-init policy rarely emits a stop string, so turns run
to the 32-token budget and multi-turn episodes use all 3 turns (malformed turns get an error
observation): an upper bound on the work of a trained policy's step.

Generated tokens = action tokens (`Trajectory.num_action_tokens`); the ceiling is
bench/ceiling.py's 2·N FLOP/token at the measured matmul rate of the threads in use (inline:
GFLOP/s at --threads; Ray: workers x GFLOP/s at 1 thread). Prompt and observation tokens are
processed too (prefill), so the fraction understates the hardware's use; `proc tok/s` counts them.
Ray start-up and actor construction are outside the timing; `set_weights` is timed separately.
Prints a table and writes bench/results/rollout.json.

    python bench/rollout.py [--models quickstart,10m] [--modes inline,ray1,ray2] [--turns single,multi]
                            [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import machine_meta, markdown_table, model_configs, write_result
from ceiling import ceiling, measure_gflops

from steprl.agents.config import TokenizerConfig
from steprl.agents.model import count_parameters
from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.rollout.plan import plan_step
from steprl.rollout.workers import RolloutPool, WorkerSpec

TURNS = {"single": 1, "multi": 3}
MODES = {"inline": ("inline", 1), "ray1": ("ray", 1), "ray2": ("ray", 2)}


def bench_config(turns: int, executor: str, workers: int, quick: bool):
    """The quickstart preset with the episode shape and executor under test."""
    over = [f"env.kwargs.max_turns={turns}", f"rollout.executor={executor}", f"rollout.workers={workers}"]
    if quick:  # 16 episodes in micro-batches of 8: still two micro-batches, so two Ray actors both work
        over += ["rollout.groups=2", "rollout.micro_batch=8"]
    return load_config("quickstart", over)


def start_pool(spec: WorkerSpec, cfg, weights) -> tuple[RolloutPool, float, int]:
    """A pool with `weights` loaded: (pool, seconds of set_weights, restarts). An actor that dies while
    starting (seen once under heavy load: 'connection error code 2') gets one fresh pool, reported."""
    for attempt in range(2):
        pool = RolloutPool(spec, cfg.rollout, cfg.ray.address, cfg.ray.num_cpus)
        try:
            t0 = time.perf_counter()
            pool.set_weights(0, weights)
            return pool, time.perf_counter() - t0, attempt
        except Exception as e:  # noqa: BLE001 - Ray's actor-death errors; re-raised on the second failure
            pool.close()
            if attempt:
                raise
            print(f"  pool start failed ({type(e).__name__}); retrying once", flush=True)
    raise AssertionError("unreachable")


def time_play(pool: RolloutPool, specs, repeats: int) -> tuple[float, list]:
    """Warm-up play, then best-of-`repeats` seconds of `pool.play(specs)`; returns (seconds, trajectories)."""
    trajs = pool.play(specs)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        trajs = pool.play(specs)
        best = min(best, time.perf_counter() - t0)
    return best, trajs


def main() -> None:
    """Run the grid and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=str, default="quickstart,10m")
    ap.add_argument("--modes", type=str, default="inline,ray1,ray2", help=f"any of {', '.join(MODES)}")
    ap.add_argument("--turns", type=str, default="single,multi", help="single (max_turns=1) and/or multi (max_turns=3)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the inline worker (and of this process)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke check: 16 episodes, 1 repeat, short matmul probe")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    probe = dict(sizes=(512, 1024), repeats=2) if args.quick else {}
    gflops = {1: measure_gflops(1, **probe), args.threads: measure_gflops(args.threads, **probe)}
    print(f"matmul: {gflops[1]:.1f} GFLOP/s at 1 thread, {gflops[args.threads]:.1f} at {args.threads}", flush=True)
    rows = []
    for name, mc in model_configs(args.models):
        policy = build_policy(mc, TokenizerConfig(), seed=0)
        params = count_parameters(policy.model)
        weights = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
        print(f"model {name}: {params:,} parameters ({mc.layers} layers, hidden {mc.hidden}, heads {mc.heads}, "
              f"intermediate {mc.intermediate})", flush=True)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            executor, workers = MODES[mode]
            for shape in [s.strip() for s in args.turns.split(",") if s.strip()]:
                cfg = bench_config(TURNS[shape], executor, workers, args.quick)
                threads = args.threads if executor == "inline" else cfg.rollout.worker_threads
                spec = WorkerSpec(
                    policy.model.config, policy.tokenizer, dict(cfg.env.kwargs), cfg.rollout.sampling, threads
                )
                pool, t_weights, restarts = start_pool(spec, cfg, weights)
                try:
                    specs = plan_step(cfg, 0)
                    sec, trajs = time_play(pool, specs, repeats)
                finally:
                    pool.close()
                gen = sum(t.num_action_tokens for t in trajs)
                proc = sum(len(t.tokens) for t in trajs)
                g = gflops[args.threads] if executor == "inline" else workers * gflops[threads]
                ceil = ceiling(params, g)["generate_tok_s"]
                row = {
                    "model": name,
                    "params": params,
                    "mode": mode,
                    "executor": executor,
                    "workers": workers,
                    "threads_total": threads * workers,
                    "shape": shape,
                    "max_turns": TURNS[shape],
                    "episodes": len(trajs),
                    "micro_batch": cfg.rollout.micro_batch,
                    "mean_turns": sum(t.num_turns for t in trajs) / len(trajs),
                    "generated_tokens": gen,
                    "processed_tokens": proc,
                    "seconds": sec,
                    "gen_tok_s": gen / sec,
                    "proc_tok_s": proc / sec,
                    "set_weights_s": t_weights,
                    "pool_restarts": restarts,
                    "gflops": g,
                    "ceiling_gen_tok_s": ceil,
                    "fraction": gen / sec / ceil,
                }
                rows.append(row)
                print(
                    f"  {mode:6s} {shape:6s}: {row['gen_tok_s']:8.0f} gen tok/s  ({row['fraction']:.1%} of "
                    f"{ceil:.0f})  "
                    f"{row['mean_turns']:.2f} turns/episode  {sec:.2f} s",
                    flush=True,
                )
    if any(r["executor"] == "ray" for r in rows):
        import ray

        ray.shutdown()
    cols = [
        ("model", "model", ""),
        ("params", "params", ",d"),
        ("mode", "executor", ""),
        ("threads_total", "threads", "d"),
        ("shape", "turns", ""),
        ("mean_turns", "turns/ep", ".2f"),
        ("gen_tok_s", "gen tok/s", ".0f"),
        ("proc_tok_s", "proc tok/s", ".0f"),
        ("ceiling_gen_tok_s", "ceiling tok/s", ".0f"),
        ("fraction", "of ceiling", ".1%"),
    ]
    print(markdown_table(rows, cols))
    meta = machine_meta(args.threads) | {"repeats": repeats, "quick": args.quick, "gflops_by_threads": gflops}
    print("wrote", write_result("rollout", {"meta": meta, "rows": rows}))


if __name__ == "__main__":
    main()
