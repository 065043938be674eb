"""Read a W&B transaction log (`run-<id>.wandb`, what offline mode writes) with wandb's own protobuf Record.

The file is a LevelDB-style log: a 7-byte header (':W&B', magic 0xBEE1, version), then 32 KiB blocks of chunks,
each a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a chunk never
straddles a block (a tail shorter than a header is zero padding). wandb no longer ships a Python reader.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7


def records(path: Path) -> list:
    """Every Record in the file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            pending = chunk
        elif kind == 2:
            pending = chunk
            continue
        elif kind == 3:
            pending += chunk
            continue
        elif kind == 4:
            pending += chunk
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(pending)
        out.append(rec)
        pending = b""
    return out


def history(path: Path) -> list[dict[str, Any]]:
    """The history rows of a run's log, values decoded; a media value (a table) is a dict of its nested keys."""
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in rec.history.item:
            keys = [item.key] if item.key else list(item.nested_key)
            node = row
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


def run_ids(path: Path) -> set[str]:
    """The run ids the log's run records name."""
    return {rec.run.run_id for rec in records(path) if rec.WhichOneof("record_type") == "run"}
