"""Benchmark: matmul GFLOP/s in float32 vs bfloat16 at decode-sized and training-sized shapes, on this CPU.

bf16 pays on a CPU only where it has bf16 matmul instructions (AMX on Intel, AVX512_BF16 on AMD/Intel);
elsewhere oneDNN emulates it and it is far slower than float32. Shapes: `decode` is a 64-row batch of one
token through the 10M model's MLP (64x320 by 320x1280), `train` the same linear over a 64x64-token
micro-batch (4096x320 by 320x1280), `square` n=1024. Prints GFLOP/s per dtype and the bf16/fp32 ratio.

    python bench/matmul_dtype.py [--threads 2] [--shapes decode,train,square] [--seconds 1.0] [--dtype both]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = {"decode": (64, 320, 1280), "train": (4096, 320, 1280), "square": (1024, 1024, 1024)}
"""(rows M, inner K, outputs N): F.linear of [M, K] by a [N, K] weight."""


def gflops(shape: tuple[int, int, int], dtype: torch.dtype, seconds: float) -> float:
    """Best-of-5 GFLOP/s of F.linear at `shape` and `dtype`, each timing at least `seconds / 5` long."""
    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=g).to(dtype), torch.randn(n, k, generator=g).to(dtype)
    for _ in range(3):
        F.linear(x, w)
    iters, best = 1, float("inf")
    while True:  # calibrate
        t0 = time.perf_counter()
        for _ in range(iters):
            F.linear(x, w)
        dt = time.perf_counter() - t0
        if dt > seconds / 5:
            break
        iters *= 2
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(iters):
            F.linear(x, w)
        best = min(best, (time.perf_counter() - t0) / iters)
    return 2 * m * k * n / best / 1e9


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", type=str, default="decode,train,square")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--dtype", choices=("both", "float32", "bfloat16"), default="both")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} threads")
    print("| shape | M x K x N | float32 GFLOP/s | bfloat16 GFLOP/s | bf16 / fp32 |\n|---|---|---|---|---|")
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        f32 = gflops(shape, torch.float32, args.seconds) if args.dtype != "bfloat16" else float("nan")
        b16 = gflops(shape, torch.bfloat16, args.seconds) if args.dtype != "float32" else float("nan")
        print(f"| {name} | {'x'.join(map(str, shape))} | {f32:.1f} | {b16:.1f} | {b16 / f32:.2f} |", flush=True)


if __name__ == "__main__":
    main()
