"""Benchmark: this machine's float32 matmul rate and the compute ceiling tokens/s it implies.

`torch.mm` on square float32 matrices (512, 1024, 2048 by default) with a fixed torch thread
count, best of N per size; the machine's rate is the best over sizes. From it, the ceiling of a
model with N parameters: 2·N FLOPs per generated (forward-only) token, 6·N per trained
(forward + backward) token; attention's sequence-length term is ignored, so short-sequence
small models come closest to these numbers. Prints a table and writes bench/results/ceiling.json.

    python bench/ceiling.py [--threads 1,2] [--repeats 5] [--quick]

Other scripts import it (bench/ is on sys.path when they run as `python bench/x.py`):

    from ceiling import measure_gflops, ceiling
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from _common import machine_meta, markdown_table, model_configs, param_count, write_result

SIZES = (512, 1024, 2048)


def measure_gflops_by_size(threads: int, sizes: Sequence[int] = SIZES, repeats: int = 5) -> dict[int, float]:
    """Best-of-`repeats` GFLOP/s of a float32 n x n @ n x n torch.mm for each n, with `threads` torch threads."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    out: dict[int, float] = {}
    try:
        for n in sizes:
            a = torch.randn(n, n, generator=gen, dtype=torch.float32)
            b = torch.randn(n, n, generator=gen, dtype=torch.float32)
            c = torch.empty(n, n, dtype=torch.float32)
            torch.mm(a, b, out=c)  # warm-up
            inner = max(
                1, int(2e9 // (2 * n**3))
            )  # ~2 GFLOP per timed sample: long enough to time, short enough to repeat
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(inner):
                    torch.mm(a, b, out=c)
                best = min(best, (time.perf_counter() - t0) / inner)
            out[n] = 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(prev)
    return out


def measure_gflops(threads: int, sizes: Sequence[int] = SIZES, repeats: int = 5) -> float:
    """The machine's float32 matmul rate in GFLOP/s with `threads` torch threads (best over sizes and repeats)."""
    return max(measure_gflops_by_size(threads, sizes, repeats).values())


def ceiling(params: int, gflops: float) -> dict[str, float]:
    """Compute-bound tokens/s of a `params`-parameter model at `gflops`: generate (2·N FLOP/token), train (6·N)."""
    flops = gflops * 1e9
    return {"generate_tok_s": flops / (2 * params), "train_tok_s": flops / (6 * params)}


def main() -> None:
    """Measure the matmul rate per thread count and print the ceilings of the benchmarked models."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=str, default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", type=str, default="quickstart,10m")
    ap.add_argument("--quick", action="store_true", help="smoke check: sizes 512,1024, 2 repeats")
    args = ap.parse_args()
    sizes = (512, 1024) if args.quick else SIZES
    repeats = 2 if args.quick else args.repeats
    models = [(name, param_count(mc)) for name, mc in model_configs(args.models)]
    rows = []
    for t in [int(x) for x in args.threads.split(",")]:
        by_size = measure_gflops_by_size(t, sizes, repeats)
        g = max(by_size.values())
        row = {"threads": t, "gflops": g, **{f"gflops_{n}": v for n, v in by_size.items()}}
        for name, n in models:
            c = ceiling(n, g)
            row[f"{name}_gen_tok_s"], row[f"{name}_train_tok_s"] = c["generate_tok_s"], c["train_tok_s"]
        rows.append(row)
        print(
            f"threads {t}: " + "  ".join(f"n={n}: {v:.1f}" for n, v in by_size.items()) + f"  -> {g:.1f} GFLOP/s",
            flush=True,
        )
    cols = [("threads", "threads", "d"), ("gflops", "GFLOP/s", ".1f")]
    for name, n in models:
        cols += [
            (f"{name}_gen_tok_s", f"{name} ({n / 1e6:.2f}M) gen tok/s", ".0f"),
            (f"{name}_train_tok_s", f"{name} train tok/s", ".0f"),
        ]
    print(markdown_table(rows, cols))
    meta = machine_meta(max(r["threads"] for r in rows)) | {
        "sizes": list(sizes),
        "repeats": repeats,
        "quick": args.quick,
        "params": dict(models),
    }
    print("wrote", write_result("ceiling", {"meta": meta, "rows": rows}))


if __name__ == "__main__":
    main()
