"""Kernel pinning: `run.kernels = native | portable` (issue #17, portable exactness).

ATen's vectorised kernels, MKL and oneDNN choose code paths by instruction set, so float
results (hence weights) differ between CPUs. `portable` pins every choice that measurably
changes results to the AVX2 paths, which every x86-64 CPU with AVX2 (Intel or AMD) runs
identically. The variables are read when torch initialises (import / first kernel call),
so they must be in the environment before torch is imported: the CLI calls `apply_from_argv`
first thing and re-executes the process if torch is already loaded with other values.

This module must not import torch at import time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MODES = ("native", "portable")
MODE_VAR = "STEPRL_KERNELS"
"""Set to the mode in every pinned process (Ray workers get it too)."""
REEXEC_VAR = "STEPRL_KERNELS_REEXEC"

# Measured on AMD EPYC (AVX-512) and Intel Xeon (AVX-512+AMX): ATEN_CPU_CAPABILITY and MKL_CBWR
# change the weights; ONEDNN_MAX_CPU_ISA did not for this workload but is pinned as well
# (oneDNN serves some CPU ops and its choice is ISA-dependent by design).
ISA_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
PINNED_KEYS = tuple(ISA_ENV) + THREAD_VARS
CUDA_VARS = ("CUBLAS_WORKSPACE_CONFIG",)
"""Set before CUDA initialises in every process of a CUDA run (agents/device.py)."""


def check_mode(mode: str) -> str | None:
    """None if `mode` is valid, else the problem (for RunConfig.check)."""
    if mode not in MODES:
        return f"expected one of {', '.join(MODES)}, got {mode!r}"
    return None


def cpu_flags() -> set[str]:
    """The CPU's flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("flags"):
                    return set(ln.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pinned_env(threads: int) -> dict[str, str]:
    """The environment of a portable process with `threads` torch threads."""
    return {**ISA_ENV, **{k: str(threads) for k in THREAD_VARS}, MODE_VAR: "portable"}


def worker_env() -> dict[str, str]:
    """Variables a Ray worker needs to compute like this process (empty in native mode).

    Thread counts are left out: workers set their own (rollout.worker_threads). The cuBLAS workspace
    setting a CUDA run's driver set (agents/device.py) goes along, since workers may initialise CUDA."""
    cuda = {k: os.environ[k] for k in CUDA_VARS if k in os.environ}
    if os.environ.get(MODE_VAR) != "portable":
        return cuda
    return cuda | {k: os.environ[k] for k in (*ISA_ENV, MODE_VAR) if k in os.environ}


def check_machine() -> None:
    """Portable mode needs AVX2 (x86-64); raise SteprlError otherwise."""
    from steprl.errors import SteprlError

    flags = cpu_flags()
    if flags and not {"avx2", "fma"} <= flags:
        raise SteprlError("run.kernels=portable needs an x86-64 CPU with AVX2 and FMA; this CPU lacks "
                          f"{', '.join(sorted({'avx2', 'fma'} - flags))} (use run.kernels=native)")
    if not flags:
        import platform

        if platform.machine() not in ("x86_64", "AMD64"):
            raise SteprlError(f"run.kernels=portable needs an x86-64 CPU with AVX2; this is {platform.machine()}")


def ensure(mode: str, threads: int, argv: list[str] | None = None) -> None:
    """Make this process compute in `mode`: set the pinned variables before torch loads.

    native: leaves the user's environment alone. portable: overrides the user's values. If torch
    is already imported with other values the process re-executes itself (CLI only, argv None);
    called in-process with an explicit argv it raises instead.
    """
    from steprl.errors import ConfigError, SteprlError

    problem = check_mode(mode)
    if problem:
        raise ConfigError(f"run.kernels: {problem}")
    if mode == "native":
        return
    check_machine()
    want = pinned_env(threads)
    differ = {k: v for k, v in want.items() if os.environ.get(k) != v}
    if not differ:
        return
    loaded = "torch" in sys.modules
    os.environ.update(want)
    if not loaded:
        return
    if argv is not None or os.environ.get(REEXEC_VAR):
        raise SteprlError("run.kernels=portable: torch was already loaded with other kernel settings "
                          f"({', '.join(sorted(differ))}); start a fresh process")
    os.environ[REEXEC_VAR] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "steprl.cli", *sys.argv[1:]])


def _overrides(items: list[str]) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (i.partition("=") for i in items if "=" in i and not i.startswith("-"))}


def mode_from_argv(argv: list[str]) -> tuple[str, int] | None:
    """(run.kernels, run.threads) of the command in `argv` without importing torch; None when the
    command has no run config (eval, envs) or it cannot be read (the command reports that itself)."""
    args = [a for a in argv if a not in ("-v", "--verbose")]
    if len(args) < 2:
        return None
    cmd, target, rest = args[0], args[1], args[2:]
    try:
        if cmd in ("train", "distill"):
            from steprl.config import compose_config

            cfg = compose_config(target, [r for r in rest if "=" in r and not r.startswith("-")])
            return cfg.run.kernels, cfg.run.threads
        if cmd in ("resume", "replay"):
            import yaml

            run = (yaml.safe_load((Path(target) / "config.yaml").read_text()) or {}).get("run") or {}
            ov = _overrides(rest) if cmd == "resume" else {}
            return str(ov.get("run.kernels", run.get("kernels", "native"))), int(
                ov.get("run.threads", run.get("threads", 2))
            )
    except Exception:  # noqa: BLE001 - the command itself reports bad configs with a proper message
        return None
    return None


def apply_from_argv(argv: list[str] | None) -> None:
    """CLI hook: pin kernels for the command in argv (sys.argv[1:] when None) before torch loads."""
    found = mode_from_argv(list(sys.argv[1:] if argv is None else argv))
    if found is not None:
        ensure(found[0], found[1], argv)
