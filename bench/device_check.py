"""GPU check: the smoke preset on cuda, twice at world size 1 and once at world size 2; do digests and weights match?

Written to run unedited the first time a machine with a GPU is available (issue 16):

    python bench/device_check.py [--root /tmp/device_check] [--keep]

Runs `steprl train smoke run.device=cuda` three times (world size 1, again world size 1, world size 2 with
one GPU per rank, so world size 2 needs two GPUs and is reported as skipped with one), then compares
the sha256 of every checkpoint file and rollout record (the digest of a run directory: what
/tmp/digest_run.py printed during development, rewritten here) and prints MATCH or DIFFER per pair with
the first differing files. Exit 0 when everything run matches, 1 when a pair differs. On a machine
without a GPU it prints that no GPU is present and exits 0.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SMOKE = ["stages=[warmup,rl]", "rl.steps=5", "rl.checkpoint_every=1"]
"""Five RL steps, a checkpoint after each (issue 16's 'weights equal after every step')."""


def digest(run: Path) -> dict[str, str]:
    """sha256 (16 hex) of every checkpoint file and rollout record of a run directory (gz files decompressed)."""
    out = {}
    for p in sorted(run.rglob("*")):
        if not p.is_file() or not ({"checkpoints", "rollouts"} & set(p.relative_to(run).parts)):
            continue
        if p.name in ("MANIFEST.json", "state.json") or p.suffix == ".png":  # state.json holds wall times
            continue
        data = p.read_bytes()
        out[str(p.relative_to(run))] = hashlib.sha256(gzip.decompress(data) if p.name.endswith(".gz")
                                                      else data).hexdigest()[:16]
    return out


def train(root: Path, name: str, extra: list[str]) -> Path:
    """One `steprl train smoke` on cuda; raises SystemExit with its stderr tail when it fails."""
    cmd = [sys.executable, "-m", "steprl.cli", "train", "smoke", "run.device=cuda", f"run.root={root}",
           f"run.name={name}", *SMOKE, *extra]
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return root / name


def compare(what: str, a: dict[str, str], b: dict[str, str]) -> bool:
    """Print MATCH / DIFFER for two digests (weights = checkpoint model/learner files; rollouts = records)."""
    keys = sorted(set(a) | set(b))
    bad = [k for k in keys if a.get(k) != b.get(k)]
    weights = [k for k in bad if "checkpoints" in k]
    rollouts = [k for k in bad if "rollouts" in k]
    ok = not bad
    print(f"{what}: {'MATCH' if ok else 'DIFFER'} ({len(keys)} files; weights differ: {len(weights)}, "
          f"rollouts differ: {len(rollouts)})" + (f"; first: {bad[:3]}" if bad else ""), flush=True)
    return ok


def main() -> int:
    """Run the check; 0 when all comparisons match (or no GPU), 1 otherwise."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("device_check: no GPU present (torch.cuda.is_available() is False); nothing to check")
        return 0
    n_gpu = torch.cuda.device_count()
    print(f"device_check: {n_gpu} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    root = args.root or Path(tempfile.mkdtemp(prefix="device_check_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        a = digest(train(root, "ws1_a", []))
        b = digest(train(root, "ws1_b", []))
        ok = compare("cuda world size 1, run twice", a, b)
        if n_gpu >= 2:
            c = digest(train(root, "ws2", ["learner.world_size=2", "learner.cpus_per_rank=1"]))
            ok = compare("cuda world size 1 vs world size 2", a, c) and ok
        else:
            print("cuda world size 1 vs world size 2: SKIPPED (needs 2 GPUs: one per rank)")
        return 0 if ok else 1
    finally:
        if not args.keep and args.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
