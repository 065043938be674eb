"""The machine fingerprint `machine.json`: what float results of a run depend on, and `compare`.

Written into the run directory at run start; `steprl replay` and `steprl resume` compare it with
the current machine and say, once, what may make the bits differ and what to do about it.
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from steprl.cpu import cpu_flags, cpu_vendor, cpuinfo_field
from steprl.run.machine.kernels import PINNED_KEYS, THREAD_VARS

FILE = "machine.json"
KERNEL_FLAG_RE = re.compile(r"^(avx2|avx512.*|amx.*|fma|avx_vnni|f16c|sse4_1|sse4_2)$")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor())."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def fingerprint(kernels: str, threads: int) -> dict[str, Any]:
    """This machine and process: CPU model and kernel-relevant flags, the kernel paths torch uses,
    library versions, thread count, kernel mode and the values of the pinned variables."""
    import torch

    cfg = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([^\s]+)", cfg)
    dnn = re.search(r"MKL-DNN (v[^\s]+)", cfg)
    return {
        "cpu_model": cpu_model(),
        "cpu_vendor": cpu_vendor(),
        "machine": platform.machine(),
        "cpu_flags": sorted(f for f in cpu_flags() if KERNEL_FLAG_RE.match(f)),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "mkl": mkl.group(1) if mkl else None,
        "onednn": dnn.group(1) if dnn else None,
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "kernels": kernels,
        "env": {k: os.environ.get(k) for k in PINNED_KEYS},
    }


def write(run_dir: Path, kernels: str, threads: int) -> dict[str, Any]:
    """Write machine.json unless the run already has one (the machine it was recorded on)."""
    fp = fingerprint(kernels, threads)
    p = Path(run_dir) / FILE
    if not p.exists():
        p.write_text(json.dumps(fp, indent=1, sort_keys=True))
    return fp


def read(run_dir: Path) -> dict[str, Any] | None:
    """The recorded fingerprint, or None (runs from before machine.json)."""
    p = Path(run_dir) / FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _where(fp: dict[str, Any]) -> str:
    return f"{fp.get('cpu_model')} (kernels {fp.get('cpu_capability')}, run.kernels={fp.get('kernels')})"


def vendor_of(fp: dict[str, Any]) -> str:
    """The CPU vendor a fingerprint names (`cpu_vendor`; for records before that key, read off the model name)."""
    if fp.get("cpu_vendor"):
        return str(fp["cpu_vendor"])
    model = str(fp.get("cpu_model") or "").lower()
    return "GenuineIntel" if "intel" in model else "AuthenticAMD" if "amd" in model else ""


def compare(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Each difference between two fingerprints that can change float results, with what to do."""
    out = []
    portable = recorded.get("kernels") == "portable" and current.get("kernels") == "portable"
    for key, what in (("torch", "torch version"), ("mkl", "MKL version"), ("onednn", "oneDNN version")):
        if recorded.get(key) != current.get(key):
            out.append(f"{what}: recorded {recorded.get(key)}, here {current.get(key)}: results may differ bit-wise; "
                       f"install the recorded version to replay exactly")
    if recorded.get("threads") != current.get("threads"):
        out.append(f"threads: recorded run.threads={recorded.get('threads')}, here {current.get('threads')}: "
                   "float reductions depend on the thread count; use the recorded value")
    if recorded.get("kernels") != current.get("kernels"):
        out.append(f"run.kernels: recorded {recorded.get('kernels')}, here {current.get('kernels')}: "
                   "results differ bit-wise; use the recorded value")
    elif portable:  # thread variables aside: `threads` (run.threads, set by torch.set_num_threads) is compared above
        renv, cenv = recorded.get("env") or {}, current.get("env") or {}
        diff = sorted(k for k in set(renv) | set(cenv) if renv.get(k) != cenv.get(k) and k not in THREAD_VARS)
        if diff:
            out.append(f"pinned kernel variables differ ({', '.join(diff)}): this steprl pins other values "
                       "than the one that recorded the run; results may differ bit-wise")
        rv, cv = vendor_of(recorded), vendor_of(current)
        if rv and cv and rv != cv:
            out.append(f"CPU vendor: this run was recorded on {_where(recorded)} ({rv}); this machine is "
                       f"{_where(current)} ({cv}): portable kernels give the same bits only on CPUs of one vendor "
                       "(MKL branches by vendor), so expect the same data and tokens until the first divergence, "
                       "which replay reports as exit 3; run on a CPU of the recorded vendor to reproduce the bits")
        if recorded.get("cpu_capability") != current.get("cpu_capability"):
            out.append(f"kernel path: recorded {recorded.get('cpu_capability')}, here {current.get('cpu_capability')} "
                       "despite run.kernels=portable: results may differ bit-wise")
    else:  # native: any change of CPU or the variables it reads may change the kernels chosen
        same_cpu = (recorded.get("cpu_model") == current.get("cpu_model")
                    and recorded.get("cpu_flags") == current.get("cpu_flags")
                    and recorded.get("cpu_capability") == current.get("cpu_capability")
                    and recorded.get("machine") == current.get("machine"))
        renv, cenv = recorded.get("env") or {}, current.get("env") or {}
        diff = sorted(k for k in set(renv) | set(cenv) if renv.get(k) != cenv.get(k))
        if not same_cpu:
            out.append(f"this run was recorded on {_where(recorded)}; this machine is {_where(current)}: "
                       "results may differ bit-wise; use run.kernels=portable for runs that must replay elsewhere")
        if diff:
            changes = ", ".join(f"{k}={renv.get(k)!r}->{cenv.get(k)!r}" for k in diff)
            out.append(
                f"kernel variables differ from the recording ({changes}): "
                "results may differ bit-wise; set them as recorded, or use run.kernels=portable for new runs"
            )
    return out


def check_against(run_dir: Path, kernels: str, threads: int) -> list[str]:
    """compare(machine.json of run_dir, this process); [] when the run has no machine.json."""
    recorded = read(run_dir)
    if recorded is None:
        return []
    return compare(recorded, fingerprint(kernels, threads))
