"""Exactness at full size on the real model: the `smollm2` preset (SmolLM2-135M-Instruct, all 30 layers) for 2
short RL steps, then the three checks CI makes on a 3-layer cut (tests/integration/pipeline/test_real_model.py):

    python bench/real_model_exactness.py [--root /tmp/exact] [key=value ...]

1. `steprl replay RUN --step 1` gives identical tokens and verified weights (exit 0);
2. 1 step, stop, `resume` to 2 == 2 uninterrupted steps, bitwise (weights, AdamW state, rollouts);
3. learner.world_size=2 == 1, bitwise.
Prints one line per check and the wall time of each run; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from steprl.run.machine.kernels import pin

pin()  # the preset's run.kernels=portable: pinned before anything below imports torch

from steprl.cli import main as cli  # noqa: E402
from steprl.config import load_config  # noqa: E402
from steprl.pipeline import resume, train  # noqa: E402
from steprl.run.files.run_dir import open_run_dir  # noqa: E402

SHORT = ["warmup.steps=2", "warmup.batch_size=2", "warmup.length_buckets=1", "warmup.cache=true",
         "rollout.groups=1", "rollout.group_size=4", "rollout.micro_batch=4", "rollout.sampling.max_new_tokens=24",
         "learner.micro_batch=2", "learner.threads_per_rank=1", "learner.cpus_per_rank=0.5",
         "learner.entropy_coef=0.05", "rl.steps=2", "rl.checkpoint_every=1", "stages=[warmup,rl]"]


def digest(run_dir: Path, step: int) -> dict[str, str]:
    """sha256 of the step's weights and learner state and of every rollout record."""
    ck = run_dir / "checkpoints" / f"step_{step:06d}"
    out = {rel: hashlib.sha256((ck / rel).read_bytes()).hexdigest()
           for rel in ("model/model.safetensors", "learner.safetensors", "learner.json")}
    for p in sorted((run_dir / "rollouts").glob("*.jsonl.gz")):
        out[p.name] = hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
    return out


def timed(what: str, fn, *args) -> None:
    """Run fn(*args), printing its wall time."""
    t0 = time.perf_counter()
    fn(*args)
    print(f"  {what}: {time.perf_counter() - t0:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the three checks; 0 when all hold."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="where the runs go (default: a temporary directory)")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="steprl-exact-"))

    def cfg(name: str, *extra: str):
        return load_config("smollm2", [f"run.root={root}", f"run.name={name}", *SHORT, *extra, *args.overrides])

    timed("2 steps", train, cfg("full"))
    base = digest(root / "full", 2)
    ok = True
    rc = cli(["replay", str(root / "full"), "--step", "1"])
    print(f"replay step 1: exit {rc} ({'identical tokens, weights verified' if rc == 0 else 'DIFFERS'})")
    ok &= rc == 0
    timed("1 step", train, cfg("part", "rl.steps=1"))
    part_dir, part_cfg = open_run_dir(root / "part")
    part_cfg.rl.steps = 2
    timed("resume to 2", resume, part_dir, part_cfg)
    same = digest(part_dir, 2) == base
    print(f"resume: {'bitwise equal' if same else 'DIFFERS'} to the uninterrupted run")
    ok &= same
    timed("world size 2", train, cfg("ws2", "learner.world_size=2"))
    same = digest(root / "ws2", 2) == base
    print(f"learner world size 2: {'bitwise equal' if same else 'DIFFERS'} to world size 1")
    ok &= same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
