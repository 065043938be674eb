"""Record every step's trajectories as gzipped JSON lines, written atomically, read back with proof.

`runs/<name>/rollouts/step_NNNNNN.jsonl.gz`: a header line, then one trajectory per line. Each
record carries its digest, so a tampered token (with the old digest kept) is caught on read,
as is a truncated gzip stream, a line that is not JSON, or a wrong record count. Never pickle.

Format v2 records use trajectory digest rule 2 (behaviour log-probs and error included); format v1
files, written before, are still read and each record verified by rule 1, the rule it was written with.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from steprl.rollout.trajectory import DIGEST_VERSION, Trajectory

FORMAT = "steprl-rollouts-v2"
"""The format new records are written in."""

DIGEST_RULES = {"steprl-rollouts-v1": 1, FORMAT: DIGEST_VERSION}
"""Readable formats -> the trajectory digest rule their records were written with."""


class RecordError(ValueError):
    """A rollout file is missing, damaged or tampered; the message names the file and line."""


class RecordWriteError(OSError):
    """A rollout file could not be written (disk full, read-only file system); names the file and the cause."""


def step_path(rollout_dir: str | Path, step: int) -> Path:
    """Path of step `step`'s record."""
    return Path(rollout_dir) / f"step_{step:06d}.jsonl.gz"


def steps_digest(trajs: Iterable[Trajectory]) -> str:
    """One digest for a whole step: blake2b over its trajectories' digests in episode-index order."""
    h = hashlib.blake2b(digest_size=16, person=b"steprl-step")
    for t in sorted(trajs, key=lambda t: t.spec.index):
        h.update(bytes.fromhex(t.digest))
    return h.hexdigest()


def write_step(rollout_dir: str | Path, step: int, trajs: Sequence[Trajectory]) -> Path:
    """Write the step's trajectories (sorted by episode index) to a temp file, fsync, rename into place.

    Log-probs are always written: they are part of the digest, so a record without them could not be verified.
    """
    path = step_path(rollout_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(trajs, key=lambda t: t.spec.index)
    tmp = path.with_name(path.name + ".tmp")
    header = {"format": FORMAT, "step": step, "count": len(ordered), "digest": steps_digest(ordered)}
    try:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:  # mtime=0: byte-identical files
                gz.write((json.dumps(header, sort_keys=True) + "\n").encode())
                for t in ordered:
                    gz.write(
                        (
                            json.dumps(t.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"
                        ).encode()
                    )
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RecordWriteError(e.errno, f"could not write rollout record {path} ({e.strerror or e}); "
                               f"no partial record was left behind") from None
    return path


def read_step(rollout_dir: str | Path, step: int) -> list[Trajectory]:
    """Read and verify a step's record; raises RecordError naming the file and line on any damage."""
    path = step_path(rollout_dir, step)
    if not path.is_file():
        have = (
            sorted(int(p.name[5:11]) for p in Path(rollout_dir).glob("step_*.jsonl.gz"))
            if Path(rollout_dir).is_dir()
            else []
        )
        raise RecordError(
            f"no rollout record for step {step} at {path} (recorded steps: {have[:5]}{'...' if len(have) > 5 else ''})"
        )
    return read_file(path)


def read_file(path: str | Path) -> list[Trajectory]:
    """Read and verify one rollout file."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except (OSError, EOFError, zlib.error) as e:
        raise RecordError(f"{path}: not a complete gzip file ({e})") from None
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise RecordError(f"{path}: empty record (no header line)")
    header = _json(path, 1, lines[0])
    if not isinstance(header, dict) or header.get("format") not in DIGEST_RULES:
        raise RecordError(f"{path}:1: not a steprl rollout header (expected format {FORMAT!r} "
                          f"or an older {sorted(set(DIGEST_RULES) - {FORMAT})})")
    rule = DIGEST_RULES[header["format"]]
    trajs = []
    for n, line in enumerate(lines[1:], start=2):
        try:
            t = Trajectory.from_dict(_json(path, n, line))
        except (ValueError, TypeError) as e:
            raise RecordError(f"{path}:{n}: bad trajectory record ({e})") from None
        if not t.verify(rule):
            raise RecordError(f"{path}:{n}: digest mismatch for episode {t.spec.index} (the record was altered)")
        trajs.append(t)
    if header.get("count") != len(trajs):
        raise RecordError(f"{path}: header says {header.get('count')} trajectories, found {len(trajs)} (truncated?)")
    if header.get("digest") != steps_digest(trajs):
        raise RecordError(f"{path}: step digest mismatch (records added, removed or reordered)")
    return trajs


def _json(path: Path, n: int, line: bytes):
    """Parse one line, naming the file and line on failure."""
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}:{n}: not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
