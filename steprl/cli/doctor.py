"""`steprl doctor`: this machine, the kernels a run would use here, and where its arithmetic parts from the
machines already recorded (per-kernel fingerprints, docs/kernel-fingerprints/).

Information only: it exits 0 whatever differs (CI prints it); a bad argument or unreadable file exits 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steprl.console import emit
from steprl.errors import SteprlError

RECORDS = Path(__file__).resolve().parents[2] / "docs" / "kernel-fingerprints"
"""The committed records, in a source checkout (an installed wheel has none: pass --against)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `doctor` subcommand."""
    p = sub.add_parser(
        "doctor",
        help="this machine's kernels and how they differ from recorded machines",
        description="Print this machine (CPU, vendor, kernel flags, torch/MKL/oneDNN), fingerprint the float32 "
        "kernels a run uses under run.kernels=portable (or native), and diff against recorded machines.",
    )
    p.add_argument("--kernels", choices=("portable", "native"), default="portable",
                   help="the pins to fingerprint under (default portable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra kernel variable over the pins, e.g. MKL_CBWR=COMPATIBLE (repeatable)")
    p.add_argument("--against", type=Path, default=None, help=f"folder of recorded *.json (default {RECORDS})")
    p.add_argument("--out", type=Path, default=None, help="write this machine's record to this file")
    p.add_argument("--diff", nargs=2, type=Path, metavar=("A", "B"), help="only diff two recorded files")
    p.set_defaults(run=run)


def _read(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SteprlError(f"{path}: not a readable kernel fingerprint record ({type(e).__name__}: {e})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("ops"), dict):
        raise SteprlError(f"{path}: not a kernel fingerprint record (expected a JSON object with an 'ops' mapping)")
    return rec


def _extra(items: list[str]) -> dict[str, str]:
    from steprl.run.machine.kernels import PINNED_KEYS

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in PINNED_KEYS:
            raise SteprlError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(PINNED_KEYS)}")
        out[key] = value
    return out


def _describe(rec: dict) -> str:
    return (f"{rec.get('cpu')} ({rec.get('vendor') or 'vendor not recorded'}; kernels {rec.get('capability')}; "
            f"MKL_CBWR={(rec.get('pins') or {}).get('MKL_CBWR')})")


def _diff_lines(name: str, mine: dict, theirs: dict) -> list[str]:
    from steprl.run.machine.kernel_fingerprints import diff

    same, differ = diff(theirs, mine)
    head = f"  {name}: {len(same)} of {len(same) + len(differ)} ops identical"
    return [head + (f"; differ: {', '.join(differ)}" if differ else " (bitwise the same kernels)")]


def run(args: argparse.Namespace) -> int:
    """Print the machine, fingerprint it, and diff."""
    from steprl.run.machine.kernel_fingerprints import record_in_child
    from steprl.run.machine.kernels import pinned_env

    if args.diff:
        a, b = (_read(p) for p in args.diff)
        emit(f"{args.diff[0].name}: {_describe(a)}\n{args.diff[1].name}: {_describe(b)}")
        emit("\n".join(_diff_lines(args.diff[0].name, b, a)))
        return 0
    folder = args.against if args.against is not None else RECORDS
    if args.against is not None and not folder.is_dir():
        raise SteprlError(f"--against {folder}: not a folder of recorded *.json")
    extra = _extra(args.set)
    from steprl.cpu import resolve_kernels
    from steprl.run.machine.kernels import check_machine

    if args.kernels == "portable":
        check_machine()
    env = (pinned_env(2) if args.kernels == "portable" else {}) | extra
    mine = record_in_child(env)
    emit(f"this machine: {_describe(mine)}; flags {' '.join(mine['flags'])}; torch {mine['torch']}, "
         f"MKL {mine['mkl']}, oneDNN {mine['onednn']}")
    emit(f"run.kernels=auto resolves to {resolve_kernels('auto')} here; fingerprinted under {args.kernels}"
         + (f" with {', '.join(args.set)}" if args.set else ""))
    if args.out:
        args.out.write_text(json.dumps(mine, indent=1, sort_keys=True) + "\n")
        emit(f"record written to {args.out}")
    records = {p.stem: _read(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
    if not records:
        emit(f"no recorded machines in {folder} to compare with")
        return 0
    emit(f"against the records in {folder} (information, not a failure):")
    pins = mine.get("pins") or {}
    for name, rec in sorted(records.items(), key=lambda kv: (kv[1].get("pins") or {}) != pins):
        tag = "same pins" if (rec.get("pins") or {}) == pins else "other pins"
        for line in _diff_lines(f"{name} [{tag}: {_describe(rec)}]", mine, rec):
            emit(line)
    return 0
