"""Run a preset at several seeds and tabulate what a user would see: wall time, held-out success per
stage (with its 95% CI), the student's retention and generation speed-up; then mean, min and max.

    python bench/seeds.py quickstart --seeds 0..4 [--root /tmp/seeds] [--json out.json] [key=value ...]

Each seed runs sequentially as a fresh `steprl train PRESET run.seed=S` in its own run directory (the
same command a user types, as a subprocess, so wall time includes start-up). Extra `key=value`
overrides go to every run (e.g. `run.kernels=portable`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("warmup", "rl", "distill", "eval")


def parse_seeds(text: str) -> list[int]:
    """'0..4' -> [0, 1, 2, 3, 4]; '0,3,7' -> [0, 3, 7]."""
    if ".." in text:
        lo, hi = text.split("..")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def cpu_model() -> str:
    """CPU model name and its kernel-relevant flags (results and timings depend on both)."""
    name, flags = platform.processor(), ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), name)
        all_flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
        flags = " ".join(f for f in all_flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return f"{name} ({flags})"


def run_seed(preset: str, seed: int, root: Path, overrides: list[str]) -> dict:
    """One fresh run; returns its row (wall time, per-stage success and CI, retention, speed-up)."""
    name = f"{preset}_seed{seed}"
    cmd = ["steprl", "train", preset, f"run.seed={seed}", f"run.root={root}", f"run.name={name}", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"seed": seed, "wall_s": wall, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    stages = json.loads((root / name / "summary.json").read_text()).get("stages", {})
    row = {"seed": seed, "wall_s": wall}
    for s in STAGES:
        if s in stages and stages[s].get("success") is not None:
            row[s] = stages[s]["success"]
            row[f"{s}_ci"] = stages[s].get("success_ci")
    ratios = stages.get("eval", {}).get("student_vs_teacher") or {}
    row["retention"] = ratios.get("success_ratio")
    row["speedup"] = ratios.get("speedup")
    row["param_ratio"] = ratios.get("param_ratio")
    return row


TARGETS = "wall < 300 s; RL >= 0.85 and >= warm-up + 0.25; student retention >= 0.90 and speed-up >= 2x"
"""The quickstart's promises (issue 19), checked per seed where the row has the stage."""


def misses(row: dict) -> list[str]:
    """The targets this seed's run missed (empty: all met)."""
    out = []
    if row.get("wall_s", 0) >= 300:
        out.append("wall")
    if "rl" in row and not (row["rl"] >= 0.85 and row["rl"] - row.get("warmup", 0.0) >= 0.25):
        out.append("rl")
    if row.get("retention") is not None and row["retention"] < 0.9:
        out.append("retention")
    if row.get("speedup") is not None and row["speedup"] < 2:
        out.append("speedup")
    return out


def table(rows: list[dict], targets: bool = True) -> str:
    """Markdown: one row per seed (with the quickstart targets it missed, if `targets`), then mean / min / max of
    each numeric column."""
    cols = ["wall_s", *[s for s in STAGES if any(s in r for r in rows)], "retention", "speedup"]
    end = " | targets |" if targets else " |"
    head = "| seed | " + " | ".join(cols) + end + "\n|" + "---|" * (len(cols) + 1 + targets)
    lines = [head]

    def cell(r: dict, c: str) -> str:
        v = r.get(c)
        if v is None:
            return "-"
        ci = r.get(f"{c}_ci")
        text = f"{v:.0f}" if c == "wall_s" else f"{v:.3f}"
        return text + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    for r in rows:
        cells = [cell(r, c) if "error" not in r else r["error"][0] for c in cols]
        missed = misses(r) if "error" not in r else ["failed"]
        verdict = f" | {'met' if not missed else 'missed: ' + ', '.join(missed)} |" if targets else " |"
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + verdict)
    for label, fn in (("mean", statistics.fmean), ("min", min), ("max", max)):
        vals = []
        for c in cols:
            xs = [r[c] for r in rows if r.get(c) is not None]
            vals.append("-" if not xs else (f"{fn(xs):.0f}" if c == "wall_s" else f"{fn(xs):.3f}"))
        lines.append(f"| {label} | " + " | ".join(vals) + (" | |" if targets else " |"))
    return "\n".join(lines)


def main() -> int:
    """Parse arguments, run every seed, print the table (and write JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("preset")
    p.add_argument("--seeds", default="0..4")
    p.add_argument("--root", default=None, help="where the run directories go (default: a new temp dir)")
    p.add_argument("--json", dest="json_path", default=None)
    args, overrides = p.parse_known_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="steprl_seeds_"))
    rows = []
    for seed in parse_seeds(args.seeds):
        rows.append(run_seed(args.preset, seed, root, overrides))
        sys.stdout.write(f"seed {seed}: {json.dumps(rows[-1])}\n")
        sys.stdout.flush()
    tab = table(rows, targets=args.preset == "quickstart")
    sys.stdout.write(f"\n{args.preset} {' '.join(overrides)} on {cpu_model()}, {root}\n\n{tab}\n")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"preset": args.preset, "overrides": overrides, "cpu": cpu_model(),
                                                    "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
