"""A run's topology, explicit: devices, channels and communicators (docs/architecture.md#learner).

Devices are processes with their cores or GPUs; channels are point-to-point paths (trajectories to
learner ranks, weights to rollout workers) with the bytes they carry per step; communicators are
process groups with the collectives one step runs. It is a pure function of the config and the
parameter count, printed by `steprl train CONFIG --dry-run` and kept in the run directory as
topology.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steprl.config import Config

TRAJECTORY_TOKEN_BYTES = 16
"""Payload per trajectory token: int64 id + float32 behaviour log-prob + int32 action mask."""
LEAF_SCALARS = 9
"""Per-micro-batch statistics the policy-gradient objective gathers (learners/policy_gradient.py)."""


def _device(cfg: Config) -> str:
    """The run's device (`auto` resolved as a run starting now would resolve it)."""
    from steprl.agents.device import resolve_device

    return resolve_device(cfg.run.device, fresh=True)


def topology(cfg: Config, n_params: int) -> dict[str, Any]:
    """Devices, channels and communicators of one RL step of `cfg` (a model of `n_params` float32 parameters)."""
    lc, rc = cfg.learner, cfg.rollout
    ws, device = lc.world_size, _device(cfg)
    threads = lc.threads_per_rank or cfg.run.threads
    episodes = rc.episodes_per_step
    micro = -(-episodes // lc.micro_batch)
    weight_bytes = 4 * n_params
    traj_bytes = episodes * rc.sampling.max_episode_tokens * TRAJECTORY_TOKEN_BYTES
    devices = [{"name": "driver", "process": "driver", "threads": cfg.run.threads, "device": device,
                "master_weights": "float32"}]
    devices += [{"name": f"learner_rank_{r}", "process": "driver" if ws == 1 else "ray actor", "threads": threads,
                 "cpus": lc.cpus_per_rank if ws > 1 else None, "device": device, "dtype": lc.dtype,
                 "micro_batches": _ranks_leaves(micro, ws, r)} for r in range(ws)]
    n_workers = 1 if rc.executor == "inline" else rc.workers
    gpu_workers = rc.executor == "inline" or rc.num_gpus_per_worker > 0
    worker_device = "cuda" if device == "cuda" and gpu_workers else "cpu"
    devices += [{"name": f"rollout_worker_{w}", "process": "driver" if rc.executor == "inline" else "ray actor",
                 "threads": rc.worker_threads, "cpus": rc.num_cpus_per_worker if rc.executor == "ray" else None,
                 "gpus": rc.num_gpus_per_worker or None, "device": worker_device, "dtype": rc.dtype}
                for w in range(n_workers)]
    channels = [
        {"name": "trajectories", "from": "rollout workers", "to": f"learner ranks 0..{ws - 1}",
         "via": "in-process" if ws == 1 else "ray object store (one put, read by every rank)",
         "bytes_per_step_max": 0 if ws == 1 else traj_bytes * ws},
        {"name": "weights", "from": "learner rank 0", "to": f"{n_workers} rollout worker(s)",
         "via": "in-process" if rc.executor == "inline" else "ray object store (one put per version)",
         "bytes_per_step": 0 if rc.executor == "inline" else weight_bytes},
    ]
    collectives = [] if ws == 1 else [
        {"op": "all_gather", "what": "per-micro-batch scalars", "bytes_per_rank": micro * LEAF_SCALARS * 8},
        {"op": "all_gather", "what": "subtree gradient sums (added in the fixed tree on every rank)",
         "bytes_per_rank": (n_params + 1) * 4},
    ]
    comm = {"name": "learner", "backend": "nccl" if device == "cuda" else "gloo", "world_size": ws,
            "collectives_per_epoch": collectives, "epochs": lc.epochs,
            "reduction": "fixed binary tree over micro-batch index (learners/reduce.py)"}
    return {"devices": devices, "channels": channels, "communicators": [comm] if ws > 1 else [],
            "micro_batches_per_step": micro, "parameters": n_params}


def ray_cpu_demand(cfg: Config) -> list[tuple[str, float]]:
    """The CPUs a run reserves in Ray at the same time (an RL step), one (keys that set it, CPUs) term per kind of
    actor: the rollout pool's workers (rollout.executor=ray) and the learner ranks (learner.world_size > 1). The
    student's pool reserves none (steprl/run/loop/pools.py). Empty when the run uses no Ray at all."""
    rc, lc = cfg.rollout, cfg.learner
    out = []
    if rc.executor == "ray":
        out.append((f"rollout.workers={rc.workers} x rollout.num_cpus_per_worker={rc.num_cpus_per_worker:g}",
                    rc.workers * rc.num_cpus_per_worker))
    if lc.world_size > 1:
        out.append((f"learner.world_size={lc.world_size} x learner.cpus_per_rank={lc.cpus_per_rank:g}",
                    lc.world_size * lc.cpus_per_rank))
    return out


def _ranks_leaves(micro: int, ws: int, rank: int) -> list[int]:
    from steprl.learners.reduce import TreePlan

    return TreePlan(micro, ws).leaves_of(rank)


def topology_text(topo: dict[str, Any]) -> str:
    """The human-readable form printed by --dry-run."""
    lines = [f"# topology: {topo['parameters']} parameters, {topo['micro_batches_per_step']} learner micro-batches "
             "per step", "devices:"]
    for d in topo["devices"]:
        extra = ", ".join(f"{k} {v}" for k, v in d.items() if k != "name" and v is not None)
        lines.append(f"  {d['name']}: {extra}")
    lines.append("channels:")
    for c in topo["channels"]:
        nbytes = c.get("bytes_per_step", c.get("bytes_per_step_max"))
        lines.append(f"  {c['name']}: {c['from']} -> {c['to']} via {c['via']}, {nbytes} bytes per step")
    lines.append("communicators:")
    if not topo["communicators"]:
        lines.append("  none (learner world size 1: the same gradient tree, in the driver)")
    for m in topo["communicators"]:
        lines.append(f"  {m['name']}: backend {m['backend']}, world size {m['world_size']}, {m['reduction']}")
        for op in m["collectives_per_epoch"]:
            lines.append(f"    {op['op']}: {op['what']}, {op['bytes_per_rank']} bytes per rank (x{m['epochs']} "
                         "epochs)")
    return "\n".join(lines)


def write_topology(run_dir: Path, topo: dict[str, Any]) -> None:
    """run_dir/topology.json."""
    (run_dir / "topology.json").write_text(json.dumps(topo, indent=1, sort_keys=True))
