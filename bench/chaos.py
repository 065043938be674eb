"""Chaos run: SIGKILLs at seeded random moments, alternating the driver and a Ray rollout worker, over a
smoke run (Ray executor) resumed after each driver kill; the result must equal an uninterrupted run.

    python bench/chaos.py --kills 20 --root /tmp/chaos        # minutes on 2 cores: not for CI

Compares final weights, learner state and every rollout record (sha256) and metrics.jsonl rows with the
timing fields removed. Only processes this script started (the driver and its descendants) are killed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

OVERRIDES = ["rollout.executor=ray", "rollout.workers=2", "ray.num_cpus=2", "rl.steps=400", "rl.checkpoint_every=2",
             "warmup.steps=2",  # driver kills should land in RL steps, not keep restarting the warm-up
             "stages=[warmup,rl]",
             "learner.entropy_coef=0.05"]  # the smoke preset's rewards are all zero after 2 warm-up steps: without an
# entropy bonus the gradient is zero and the weights would match however badly a resume went
TIMING = ("step_time_s", "play_time_s", "tokens_per_s", "wall_s")


def delay(seed: int, i: int, lo: float = 2.0, hi: float = 6.0) -> float:
    """Seconds before kill i: a blake2b draw of (seed, i), uniform in [lo, hi)."""
    h = int.from_bytes(hashlib.blake2b(f"chaos:{seed}:{i}".encode(), digest_size=8).digest(), "big")
    return lo + (hi - lo) * h / 2**64


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "steprl.cli", *args], stdout=open(log, "a"),
                            stderr=subprocess.STDOUT)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver, then whatever it started (embedded Ray) so nothing of it lingers."""
    tree = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def digest(run: Path) -> dict:
    ck = max((run / "checkpoints").glob("step_*"))
    h = {rel: hashlib.sha256((ck / rel).read_bytes()).hexdigest()
         for rel in ("model/model.safetensors", "learner.safetensors", "learner.json")}
    for p in sorted((run / "rollouts").glob("*.jsonl.gz")):
        h[p.name] = hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
    rows = [{k: v for k, v in json.loads(ln).items() if k not in TIMING}
            for ln in (run / "metrics.jsonl").read_text().splitlines()]
    h["metrics"] = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    h["checkpoint"], h["metric_rows"] = ck.name, str(len(rows))
    return h


def chaos(root: Path, kills: int, seed: int) -> dict:
    run, log = root / "chaos", root / "chaos.log"
    proc = start(["train", "smoke", f"run.root={root}", "run.name=chaos", *OVERRIDES], log)
    landed = {"driver": 0, "worker": 0, "missed": 0}
    # kills count from the first checkpoint: on a loaded machine start-up alone can outlast the first delay,
    # and a driver killed before its run directory exists leaves nothing to resume
    while not (run / "checkpoints" / "latest").exists() and proc.poll() is None:
        time.sleep(0.2)
    for i in range(kills):
        t_end = time.time() + delay(seed, i)
        while time.time() < t_end and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            landed["missed"] += kills - i
            break
        if i % 2 == 0:
            kill_tree(proc)
            landed["driver"] += 1
            proc = start(["resume", str(run)], log)
        else:
            workers, deadline = [], time.time() + 60  # after a driver kill the new driver's actors take a while
            while not workers and time.time() < deadline and proc.poll() is None:
                workers = [p for p in descendants(proc.pid) if "RolloutWorker" in cmdline(p)]
                time.sleep(0.2)
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                landed["worker"] += 1
            else:
                landed["missed"] += 1
    rc = proc.wait()
    if rc != 0:  # the last segment may have been killed by a worker kill's fallout: resume to the end
        rc = start(["resume", str(run)], log).wait()
    return {"landed": landed, "rc": rc}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--root", type=Path, required=True)
    a = ap.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ref = start(["train", "smoke", f"run.root={a.root}", "run.name=ref", *OVERRIDES], a.root / "ref.log").wait()
    t_ref = time.time() - t0
    result = chaos(a.root, a.kills, a.seed)
    same = ref == 0 and digest(a.root / "ref") == digest(a.root / "chaos")
    print(json.dumps({"identical": same, "reference_s": round(t_ref, 1), "total_s": round(time.time() - t0, 1),
                      **result, "ref": digest(a.root / "ref"), "chaos": digest(a.root / "chaos")}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
