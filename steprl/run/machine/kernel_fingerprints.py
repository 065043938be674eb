"""Per-kernel fingerprints: sha256 of the outputs of the float32 ops a steprl run uses, on fixed inputs.

Two machines whose runs differ bit-wise differ first in some kernel; this finds which. Each op runs on
inputs made with numpy from one fixed seed (never torch's RNG), so the inputs are the same bytes on every
machine, and its output is hashed (the first 16 hex digits of sha256). A record made under the portable
pins on one machine, diffed against another machine's, names the ops where their arithmetic parts
(issue #32: on AMD and Intel CPUs MKL takes other branches under the same pins).

The op list and the order of the random draws are those of the tool that made the first records
(shared/tools/kernel_fingerprint.py), so records made by either compare; new ops go at the end, after
every earlier draw, so the older hashes keep their meaning.

Computing must happen in a fresh process whose kernel variables were set before torch loaded:
`record_in_child` starts one. This module does not import torch at import time.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from typing import Any

FORMAT = 1
SHAPES = [(64, 96, 96), (512, 96, 288), (2048, 96, 96), (2048, 256, 768), (4096, 64, 128),
          (64, 256, 49152 // 64), (33, 97, 101), (1, 96, 96), (16, 96, 96)]
"""(m, k, n) of the matmuls: the smoke and quickstart models' hidden sizes, vocabularies and batch x length."""


def _h(t: Any) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def _adamw_exact_sqrt(p0: Any, grads: list[Any]) -> Any:
    """torch's single-tensor AdamW (defaults, lr 1e-3) with the second-moment sqrt taken in float64 and rounded:
    a correctly rounded sqrt, where MKL's vectorised float32 sqrt differs between CPU vendors."""
    import math

    import torch

    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 1e-2
    for s, g in enumerate(grads, 1):
        p.mul_(1 - lr * wd)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.double().sqrt().float() / math.sqrt(1 - b2**s)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1 - b1**s))
    return p


def compute_ops(threads: int = 2) -> dict[str, str]:
    """{op name: hash} for every op, computed in this process (whatever kernels it has)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))

    out: dict[str, str] = {}
    for m, k, n in SHAPES:
        a, b = r(m, k), r(k, n)
        out[f"mm {m}x{k}x{n}"] = _h(a @ b)
        out[f"linear {m}x{k}x{n}"] = _h(F.linear(a, b.T.contiguous()))
        x = r(m, k).requires_grad_()
        w = r(n, k).requires_grad_()
        F.linear(x, w).sum().backward()
        out[f"linear-bwd-x {m}x{k}x{n}"], out[f"linear-bwd-w {m}x{k}x{n}"] = _h(x.grad), _h(w.grad)
    out["bmm 8x64x32x64"] = _h(torch.bmm(r(8, 64, 32), r(8, 32, 64)))
    q, kk, v = r(4, 8, 64, 16), r(4, 8, 64, 16), r(4, 8, 64, 16)
    out["sdpa causal"] = _h(F.scaled_dot_product_attention(q, kk, v, is_causal=True))
    out["sdpa 1-query"] = _h(F.scaled_dot_product_attention(q[:, :, :1], kk, v))
    x = r(512, 300)
    positive = x.abs().add(1e-3)
    for name, fn in (("softmax", lambda: torch.softmax(x, -1)), ("log_softmax", lambda: torch.log_softmax(x, -1)),
                     ("logsumexp", lambda: torch.logsumexp(x, -1)), ("exp", x.exp), ("log", positive.log),
                     ("tanh", x.tanh), ("sigmoid", x.sigmoid), ("silu", lambda: F.silu(x)), ("gelu", lambda: F.gelu(x)),
                     ("rsqrt", positive.rsqrt), ("pow2-mean", lambda: x.pow(2).mean(-1, keepdim=True))):
        out[name] = _h(fn())
    out["rms_norm"] = _h(F.rms_norm(x, (300,), r(300), eps=1e-6))
    out["layer_norm"] = _h(F.layer_norm(x, (300,)))
    out["sum"], out["sum-all"], out["mean"], out["cumsum"] = _h(x.sum(-1)), _h(x.sum()), _h(x.mean(0)), _h(x.cumsum(-1))
    out["cross_entropy"] = _h(F.cross_entropy(x, torch.from_numpy(rng.integers(0, 300, 512))))
    emb = r(100, 64).requires_grad_()
    idx = torch.from_numpy(rng.integers(0, 100, 2048))
    F.embedding(idx, emb).pow(2).sum().backward()
    out["embedding-bwd"] = _h(emb.grad)
    p0 = r(4096)
    p = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([p], lr=1e-3)
    grads = []
    for _ in range(3):
        grads.append(r(4096))
        p.grad = grads[-1]
        opt.step()
    out["adamw x3"] = _h(p.data)
    g = r(10000)
    out["norm"] = _h(torch.linalg.vector_norm(g))
    out["clip"] = _h(torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(g.clone())], 1.0))
    # added after the first records (no new draws before this line)
    out["sqrt"] = _h(positive.sqrt())
    out["adamw-exact-sqrt x3"] = _h(_adamw_exact_sqrt(p0, grads))
    return out


def machine() -> dict[str, Any]:
    """CPU, vendor, kernel flags and library versions of this process (imports torch)."""
    import torch

    from steprl.cpu import cpu_vendor
    from steprl.run.machine.fingerprint import fingerprint

    fp = fingerprint(os.environ.get("STEPRL_KERNELS", "native"), torch.get_num_threads())
    return {"cpu": fp["cpu_model"], "vendor": cpu_vendor(), "machine": platform.machine(), "flags": fp["cpu_flags"],
            "capability": fp["cpu_capability"], "torch": fp["torch"], "mkl": fp["mkl"], "onednn": fp["onednn"]}


def record_in_child(env_overrides: dict[str, str], threads: int = 2, timeout_s: float = 600) -> dict[str, Any]:
    """A fingerprint record made in a fresh Python process with `env_overrides` set before torch loads."""
    from steprl.run.machine.kernels import PINNED_KEYS

    env = dict(os.environ) | env_overrides
    code = ("import json, sys; from steprl.run.machine.kernel_fingerprints import compute_ops, machine; "
            f"print(json.dumps({{**machine(), 'ops': compute_ops({int(threads)})}}))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"kernel fingerprint process failed: {done.stderr.strip()[-2000:]}")
    rec = json.loads(done.stdout.strip().splitlines()[-1])
    rec["pins"] = {k: env.get(k) for k in PINNED_KEYS}
    rec["format"], rec["date"] = FORMAT, datetime.date.today().isoformat()
    return rec


def diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(ops with equal hashes, ops that differ) over the ops both records have, in a's order."""
    both = [k for k in a["ops"] if k in b["ops"]]
    return [k for k in both if a["ops"][k] == b["ops"][k]], [k for k in both if a["ops"][k] != b["ops"][k]]

