"""Nested state dicts (tensors, numbers, lists, dicts with int keys) to safetensors + JSON and back.

Optimizer and learner states are nested Python structures. Pickle can run code on load, so we
store every tensor in one safetensors file and the structure in JSON with tagged nodes;
loading never executes anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def flatten_state(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split `state` into ({name: tensor}, a JSON-able skeleton referencing the names)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = x.detach().cpu().contiguous()
            return {"__tensor__": name}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {"__dict__": [[k, walk(v)] for k, v in x.items()]}
            return {"__dict__": [[{"__int__": k} if isinstance(k, int) else k, walk(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v) for v in x]}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, float):
            return {"__float__": x.hex()}  # exact, and NaN/Inf survive JSON
        if x is None or isinstance(x, (bool, int, str)):
            return x
        raise TypeError(
            f"cannot store a {type(x).__name__} in a checkpoint state (tensors, numbers, str, lists, dicts only)"
        )

    return tensors, walk(state)


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of `flatten_state`."""

    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__tuple__" in x:
                return tuple(walk(v) for v in x["__tuple__"])
            if "__float__" in x:
                return float.fromhex(x["__float__"])
            if "__dict__" in x:
                return {(k["__int__"] if isinstance(k, dict) else k): walk(v) for k, v in x["__dict__"]}
            raise ValueError(f"unknown node in stored state: {sorted(x)}")
        return x

    return walk(skeleton)


def save_state(state: Any, directory: Path, stem: str) -> list[Path]:
    """Write `<stem>.safetensors` and `<stem>.json` into `directory`; returns the paths."""
    tensors, skeleton = flatten_state(state)
    st, js = directory / f"{stem}.safetensors", directory / f"{stem}.json"
    save_file(tensors, str(st))
    js.write_text(json.dumps(skeleton, sort_keys=True))
    return [st, js]


def load_state(directory: Path, stem: str) -> Any:
    """Read a state written by `save_state` (safetensors + JSON: nothing is unpickled)."""
    tensors = load_file(str(directory / f"{stem}.safetensors"))
    return unflatten_state(tensors, json.loads((directory / f"{stem}.json").read_text()))
