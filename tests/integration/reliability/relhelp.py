"""Helpers of the reliability suite: smoke-sized pools, process memory, object-store usage."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steprl.rollout.trajectory import EpisodeSpec


def pool_parts(cfg: Any, seed: int = 0):
    """(policy, WorkerSpec) of a smoke-sized random-init policy for cfg (no warm-up: fast)."""
    from steprl.agents.policy import build_policy
    from steprl.rollout.workers import WorkerSpec

    policy = build_policy(cfg.model, cfg.tokenizer, seed)
    spec = WorkerSpec(policy.model.config, policy.tokenizer, dict(cfg.env.kwargs), cfg.rollout.sampling,
                      cfg.rollout.worker_threads)
    return policy, spec


def weights_of(policy: Any) -> dict:
    """Detached copies of the policy's weights."""
    return {k: v.detach().clone() for k, v in policy.model.state_dict().items()}


def with_env(specs: Sequence[EpisodeSpec], env_id: str) -> list[EpisodeSpec]:
    """The same episodes, played on another env id."""
    return [dataclasses.replace(s, env_id=env_id) for s in specs]


def digests(trajs: Sequence[Any]) -> list[tuple[int, str]]:
    """(episode index, digest) of each trajectory, in order."""
    return [(t.spec.index, t.digest) for t in trajs]


def proc_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) in KiB; 0 when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def plasma_usage() -> tuple[float, int]:
    """(MiB, objects) in Ray's object store, from the cluster memory summary."""
    import ray
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    m = re.search(r"Plasma memory usage (\d+(?:\.\d+)?) MiB, (\d+) objects", text)
    if m is None:
        raise AssertionError(f"unexpected memory summary: {text[-500:]}")
    return float(m.group(1)), int(m.group(2))


def cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m steprl.cli ARGS` niced in a subprocess; returns the CompletedProcess."""
    return subprocess.run(["nice", "-n", "19", sys.executable, "-m", "steprl.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def snapshot_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path (detects anything written or overwritten)."""
    import hashlib

    root = Path(root)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
