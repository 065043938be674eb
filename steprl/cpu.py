"""What this CPU can run, read without importing torch (the config reads it to resolve `run.kernels=auto`
before torch initialises its kernels)."""

from __future__ import annotations

import platform

PORTABLE_FLAGS = frozenset({"avx2", "fma"})
"""What `run.kernels=portable` needs: the AVX2 code paths it pins."""


def cpuinfo_field(key: str) -> str | None:
    """The value of the first `key : value` line of /proc/cpuinfo (None where it or the file is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                name, sep, value = ln.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The CPU's flags from /proc/cpuinfo (empty where unavailable)."""
    return set((cpuinfo_field("flags") or "").split())


def cpu_vendor() -> str:
    """The CPU vendor id from /proc/cpuinfo (`GenuineIntel`, `AuthenticAMD`, ...; '' where unavailable).

    Portable kernels are bitwise within a vendor, not across: MKL picks its code branch by vendor, so
    under the same pins an Intel and an AMD CPU run other GEMM and vector-math code (docs/kernel-fingerprints/)."""
    return cpuinfo_field("vendor_id") or ""


def portable_problem() -> str | None:
    """None if this CPU runs the portable (AVX2) kernels, else why not."""
    flags = cpu_flags()
    if flags:
        missing = PORTABLE_FLAGS - flags
        return f"this CPU lacks {', '.join(sorted(missing))}" if missing else None
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"this is {platform.machine()}, not x86-64"
    return None  # x86-64 without /proc/cpuinfo: assume AVX2, as every x86-64 CPU of the last decade has


def resolve_kernels(mode: str) -> str:
    """`auto` -> portable where the CPU has AVX2+FMA, native elsewhere; other modes unchanged."""
    if mode != "auto":
        return mode
    return "native" if portable_problem() else "portable"
