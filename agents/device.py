"""Where a model computes: the `run.device` choice and the CUDA settings results depend on.

`run.device` is `auto`, `cpu` or `cuda`. `auto` is resolved once, when a run starts (cuda when
torch sees a GPU), and the resolved name is what the run's config.yaml records, so a resume or a
replay follows the device the run was trained on. On CUDA every process (driver, learner ranks,
rollout workers) must set `CUBLAS_WORKSPACE_CONFIG` before CUDA initialises and turn on
`torch.use_deterministic_algorithms(True)`; otherwise cuBLAS may pick split reductions whose
order changes from call to call (docs/architecture.md#determinism).
"""

from __future__ import annotations

import os

DEVICES = ("auto", "cpu", "cuda")
"""Values of `run.device`."""
CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS workspace setting that makes its GEMMs deterministic (required by use_deterministic_algorithms)."""


def cuda_available() -> bool:
    """torch.cuda.is_available(), imported lazily."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(name: str, fresh: bool = True) -> str:
    """`cpu` or `cuda` for the `run.device` value `name`.

    `fresh` True (a run starting now): `auto` becomes cuda when available, else cpu. `fresh` False (the
    saved config of an existing run): `auto` can only come from a run written before the key was
    resolved at start, and those ran on the CPU, so it stays cpu.
    """
    if name not in DEVICES:
        raise ValueError(f"run.device: expected one of {', '.join(DEVICES)}, got {name!r}")
    if name != "auto":
        return name
    return "cuda" if fresh and cuda_available() else "cpu"


def cuda_env() -> dict[str, str]:
    """Variables a CUDA process needs before CUDA initialises (Ray workers get them in their runtime env)."""
    return {"CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE}


def cuda_determinism() -> None:
    """Set the cuBLAS workspace (unless the user set one) and turn on deterministic algorithms.

    Must run before this process's first CUDA call: cuBLAS reads the variable when its handle is created.
    """
    import torch

    for k, v in cuda_env().items():
        os.environ.setdefault(k, v)
    torch.use_deterministic_algorithms(True)
