"""Atomic, hashed checkpoints: written to a temporary directory, fsynced, renamed into place.

    checkpoints/step_000040/
        model/            save_pretrained directory (safetensors) + tokenizer: plain transformers loads it;
                          a LoRA run's holds the adapter (peft loads it) and base.json, the base's sha256
        learner.safetensors + learner.json    optimizer, schedule, guard state (no pickle); the trainer's
                          weights are model/'s, stored once (`write_learner_state`)
        state.json        step, stage, extra pipeline state
        MANIFEST.json     sha256 of every file; written last: no manifest, no checkpoint
    checkpoints/latest    name of the newest complete checkpoint

Loading verifies every hash, refuses paths that leave the directory and files the manifest
does not list (a stray pickle is never opened). `latest_good` walks back from the newest
checkpoint, skipping torn or tampered ones with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steprl.agents.lora import ADAPTER_FILE, read_adapter
from steprl.agents.model_source import sha256_of
from steprl.errors import SteprlError
from steprl.run.files.state_io import load_state, save_state

log = logging.getLogger(__name__)
STEP_DIR = re.compile(r"^step_(\d{6,})$")
MANIFEST = "MANIFEST.json"
SAFE_SUFFIXES = (".safetensors", ".json", ".txt", ".jinja", ".model", ".md")


class CheckpointError(SteprlError):
    """A checkpoint is missing, torn, tampered or holds a file type we refuse to load."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint on disk."""

    path: Path
    step: int
    state: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        """The save_pretrained directory of the policy."""
        return self.path / "model"

    def learner_state(self) -> Any:
        """The learner's state dict (tensors from safetensors, structure from JSON), its weights from model/."""
        state = load_state(self.path, "learner")
        if isinstance(state, dict) and "optimizer" in state and "model" not in state:
            state["model"] = model_weights(self.model_dir)
        return state


def model_weights(model_dir: Path) -> dict[str, Any]:
    """Every tensor of a save_pretrained directory's safetensors files (tied tensors appear once); of a LoRA
    policy's directory, its adapter in the model's state-dict naming (what its trainer's weights are)."""
    from safetensors.torch import load_file

    if (model_dir / ADAPTER_FILE).is_file():
        return read_adapter(model_dir)

    weights: dict[str, Any] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    return weights


def write_learner_state(state: Any, directory: Path) -> list[Path]:
    """Write a trainer's state as learner.safetensors + learner.json, without its weights (`state["model"]`):
    they are the checkpoint's model/ directory, so a checkpoint holds model + optimizer, not the model twice.
    `Checkpoint.learner_state` puts them back. An older checkpoint that holds them loads as before."""
    if isinstance(state, dict) and "model" in state:
        state = {k: v for k, v in state.items() if k != "model"}
    return save_state(state, directory, "learner")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed (the one reader: agents/model_source.py keys the GGUF cache with it)."""
    return sha256_of(Path(path))


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under root (so a rename publishes complete data)."""
    for p in sorted(root.rglob("*")) + [root]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(ckpt_dir: Path, step: int, save_model: Callable[[Path], None], learner_state: Any,
                    state: dict[str, Any]) -> Path:
    """Write checkpoint `step` atomically and point `latest` at it; returns its path.

    `save_model(dir)` writes the save_pretrained directory (model + tokenizer).
    """
    final = ckpt_dir / f"step_{step:06d}"
    tmp = ckpt_dir / f".tmp_step_{step:06d}"
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_model(tmp / "model")
        write_learner_state(learner_state, tmp)
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, sort_keys=True, indent=1))
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}, sort_keys=True, indent=1))
        _fsync_tree(tmp)
    except OSError as e:  # disk full, read-only ...: drop the partial copy; older checkpoints are untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {final.name} in {ckpt_dir} ({e.strerror or e}); older "
                              f"checkpoints are intact: free space, then `steprl resume {ckpt_dir.parent}`") from None
    if final.exists():  # a stale copy of the same step (e.g. re-run after a crash): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_latest(ckpt_dir, final.name)
    return final


def _write_latest(ckpt_dir: Path, name: str) -> None:
    """Atomically replace checkpoints/latest with `name`."""
    tmp = ckpt_dir / ".latest.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, ckpt_dir / "latest")


def verify(path: Path) -> Checkpoint:
    """Check a checkpoint directory against its manifest; raises CheckpointError naming the problem."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST} (incomplete or not a steprl checkpoint)")
    try:
        manifest = json.loads(mpath.read_text())
        files = dict(manifest["files"])
        step = int(manifest["step"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{mpath}: unreadable manifest ({e})") from None
    root = path.resolve()
    for rel, digest in files.items():
        p = (path / rel)
        if not p.resolve().is_relative_to(root) or p.is_symlink():
            raise CheckpointError(f"{mpath}: lists {rel!r}, which is outside the checkpoint directory")
        if not rel.endswith(SAFE_SUFFIXES):
            raise CheckpointError(
                f"{path}: refuses to load {rel!r} (only safetensors/JSON/text files; pickles are never opened)"
            )
        if not p.is_file():
            raise CheckpointError(f"{path}: file {rel!r} listed in the manifest is missing")
        if sha256_file(p) != digest:
            raise CheckpointError(
                f"{path}: file {rel!r} does not match its sha256 in the manifest (corrupted or altered)"
            )
        if rel.endswith(".safetensors"):
            check_safetensors(p)
    for p in path.rglob("*"):
        rel = p.relative_to(path).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in files:
            raise CheckpointError(f"{path}: file {rel!r} is not in the manifest (refusing to load unlisted files)")
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable state.json ({e})") from None
    return Checkpoint(path, step, state)


def check_safetensors(path: Path) -> None:
    """Raise CheckpointError unless `path` starts like a safetensors file (8-byte header size, then a JSON object).

    A pickle (or anything else) renamed to .safetensors is refused here, before any loader sees it.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        ok = 2 <= n <= min(size - 8, 100_000_000)
        if ok:
            try:
                ok = isinstance(json.loads(f.read(n)), dict)
            except (ValueError, UnicodeDecodeError):
                ok = False
    if not ok:
        raise CheckpointError(f"{path}: not a safetensors file (bad header); refusing to load it")


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete-looking checkpoint directory, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(out)


def latest_good(ckpt_dir: Path) -> Checkpoint | None:
    """The newest checkpoint whose manifest verifies; torn or tampered ones are skipped with a warning."""
    for _step, path in reversed(list_checkpoints(ckpt_dir)):
        try:
            return verify(path)
        except CheckpointError as e:
            log.warning("skipping checkpoint %s: %s", path.name, e)
    return None


def resolve_policy_dir(path: str | Path) -> Path:
    """A checkpoint dir, a run dir (its newest good checkpoint) or a plain save_pretrained dir -> model dir."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint, run directory or model directory")
    if (p / "checkpoints").is_dir():
        ckpt = latest_good(p / "checkpoints")
        if ckpt is None:
            raise CheckpointError(f"{p}: run directory has no complete checkpoint")
        return ckpt.model_dir
    if (p / MANIFEST).is_file():
        return verify(p).model_dir
    lora = (p / "adapter_config.json").is_file() and (p / "base.json").is_file()  # a LoRA policy (agents/policy.py)
    if ((p / "config.json").is_file() or lora) and any(p.glob("*.safetensors")):
        for st in sorted(p.glob("*.safetensors")):
            check_safetensors(st)
        return p
    raise CheckpointError(
        f"{p}: not a checkpoint (no MANIFEST.json), run directory (no checkpoints/) or model directory (no "
        f"config.json + safetensors, nor a steprl LoRA policy's adapter_config.json + base.json + safetensors)"
    )


def prune(ckpt_dir: Path, keep_last: int, keep_every: int, protect: tuple[int, ...] = ()) -> list[Path]:
    """Delete old checkpoints, keeping the newest `keep_last`, every `keep_every`-th step and `protect`."""
    all_ck = list_checkpoints(ckpt_dir)
    keep = {s for s, _ in all_ck[-keep_last:]} | set(protect)
    if keep_every > 0:
        keep |= {s for s, _ in all_ck if s % keep_every == 0}
    removed = []
    for s, p in all_ck:
        if s not in keep:
            shutil.rmtree(p)
            removed.append(p)
    return removed
