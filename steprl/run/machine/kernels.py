"""Kernel pinning: `run.kernels = native | portable` (issue #17, portable exactness).

ATen's vectorised kernels, MKL and oneDNN choose code paths by instruction set, so float
results (hence weights) differ between CPUs. `portable` pins every choice that measurably
changes results to the AVX2 paths, which x86-64 CPUs of one vendor with AVX2 run identically
(measured on AMD EPYC Zen 3 and Zen 5). Not across vendors: MKL branches by vendor (MKL_CBWR=AVX2 is
honoured on Intel; AMD CPUs take MKL's own branch), so Intel and AMD part in GEMM, exp/log and SDPA
(`steprl doctor`, docs/kernel-fingerprints/). The variables are read when torch initialises
(import / first kernel call), so they must be in the environment before torch is imported: the
CLI calls `apply_from_argv` first thing and re-executes the process if torch is already loaded with other values.

This module must not import torch at import time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from steprl.cpu import portable_problem, resolve_kernels

MODES = ("auto", "native", "portable")
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
    """Portable mode needs AVX2 and FMA (x86-64); raise SteprlError otherwise."""
    from steprl.errors import SteprlError

    problem = portable_problem()
    if problem:
        raise SteprlError(f"run.kernels=portable needs an x86-64 CPU with AVX2 and FMA; {problem} "
                          "(use run.kernels=native)")


def ensure(mode: str, threads: int, argv: list[str] | None = None) -> None:
    """Make this process compute in `mode`: set the pinned variables before torch loads.

    native: leaves the user's environment alone. portable (and auto where it resolves to portable):
    overrides the user's values. If torch is already imported with other ISA values the process
    re-executes itself (CLI only, argv None); called in-process with an explicit argv it raises instead.
    Thread counts alone never need a restart: torch.set_num_threads(run.threads) fixes them at run start.
    """
    from steprl.errors import ConfigError, SteprlError

    problem = check_mode(mode)
    if problem:
        raise ConfigError(f"run.kernels: {problem}")
    if resolve_kernels(mode) == "native":
        return
    check_machine()
    want = pinned_env(threads)
    differ = sorted(k for k in ISA_ENV if os.environ.get(k) != want[k])
    loaded = "torch" in sys.modules
    os.environ.update(want)
    if not loaded or not differ:
        return
    if argv is not None or os.environ.get(REEXEC_VAR):
        raise SteprlError(unpinned_message(differ))
    os.environ[REEXEC_VAR] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "steprl.cli", *sys.argv[1:]])


def unpinned_message(differ: list[str]) -> str:
    """What to do when torch was loaded before portable mode could pin its kernels."""
    return ("run.kernels=portable (the default on AVX2 CPUs): torch was imported before its kernels could be pinned "
            f"({', '.join(differ)} differ); call steprl.run.machine.kernels.pin() before importing torch, run "
            "through the `steprl` command, or set run.kernels=native (bits then depend on this CPU)")


def pin(threads: int = 2) -> None:
    """For library use: pin the portable kernels in this process. Call before anything imports torch."""
    ensure("portable", threads, [])


def verify(mode: str) -> None:
    """Raise SteprlError unless this process computes in `mode` (a library caller may have imported torch
    before pinning); a run never records portable while computing natively."""
    if mode != "portable":
        return
    from steprl.errors import SteprlError

    check_machine()
    differ = sorted(k for k, v in ISA_ENV.items() if os.environ.get(k) != v)
    if not differ and "torch" in sys.modules:
        import torch

        if torch.backends.cpu.get_cpu_capability() != "AVX2":
            differ = ["ATEN_CPU_CAPABILITY (set after torch read it)"]
    if differ:
        raise SteprlError(unpinned_message(differ))
    os.environ[MODE_VAR] = "portable"  # Ray workers started by this process get the pinned variables


def run_dir_of(policy: Path) -> Path | None:
    """The run directory holding `policy` (the run dir itself, or a checkpoint or its model dir inside it)."""
    for d in (policy, policy.parent.parent, policy.parent.parent.parent):
        if (d / "config.yaml").is_file() and (d / "checkpoints").is_dir():
            return d
    return None


def _run_kernels(policy: Path) -> str:
    """run.kernels recorded by the run directory holding `policy` (native when there is none)."""
    import yaml

    d = run_dir_of(policy)
    if d is None:
        return "native"
    return str(((yaml.safe_load((d / "config.yaml").read_text()) or {}).get("run") or {}).get("kernels", "native"))


def _overrides(items: list[str]) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (i.partition("=") for i in items if "=" in i and not i.startswith("-"))}


def mode_from_argv(argv: list[str]) -> tuple[str, int] | None:
    """(run.kernels, run.threads) of the command in `argv` without importing torch; None when the
    command has no run config (envs) or it cannot be read (the command reports that itself). `eval`
    computes in the kernels of the run its first policy comes from, with its --threads."""
    args = [a for a in argv if a not in ("-v", "--verbose")]
    if len(args) < 2:
        return None
    cmd, target, rest = args[0], args[1], args[2:]
    try:
        if cmd in ("train", "distill"):
            from steprl.config import compose_config

            cfg = compose_config(target, [r for r in rest if "=" in r and not r.startswith("-")])
            return cfg.run.kernels, cfg.run.threads
        if cmd == "eval":  # the kernels of the run the first policy belongs to (a bare model dir: native)
            threads = next((int(b) for a, b in zip(args, args[1:]) if a == "--threads"), 2)
            return _run_kernels(Path(target)), threads
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
