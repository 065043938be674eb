"""Digest of a run's trained state and records, for bitwise comparisons between runs."""

import gzip
import hashlib
from pathlib import Path


def tree_digest(run_dir: Path, step: int) -> dict[str, str]:
    """sha256 of the model weights, the learner state (optimizer, guards) and every rollout record."""
    ck = Path(run_dir) / "checkpoints" / f"step_{step:06d}"
    h = {rel: hashlib.sha256((ck / rel).read_bytes()).hexdigest()
         for rel in ("model/model.safetensors", "learner.safetensors", "learner.json")}
    for p in sorted((Path(run_dir) / "rollouts").glob("*.jsonl.gz")):
        h[p.name] = hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
    return h
