"""`steprl report RUN [RUN ...] [--out FILE]`: one self-contained HTML page of a run, or of runs compared."""

from __future__ import annotations

import argparse
from pathlib import Path

from steprl.console import emit, warn
from steprl.errors import SteprlError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand."""
    p = sub.add_parser("report", help="write an HTML report of one run or several compared",
                       description="Curves with held-out points, stage and held-out tables, an episode browser, "
                       "machine, topology and config, in one HTML file with nothing to fetch. One RUN: written to "
                       "RUN/report.html; several: to --out (default report.html).")
    p.add_argument("runs", nargs="+", help="run directories (runs/<name>)")
    p.add_argument("--out", help="the HTML file to write")
    p.set_defaults(run=run)


def default_out(runs: list[str], out: str | None) -> Path:
    """--out, else RUN/report.html for one run, else ./report.html."""
    if out:
        return Path(out)
    return Path(runs[0]) / "report.html" if len(runs) == 1 else Path("report.html")


def report_after_run(run_dir: Path) -> Path | None:
    """RUN/report.html, written when `steprl train` or `resume` finishes; None (with a warning) when it cannot be
    written: the run itself is complete either way."""
    from steprl.run.reporting.report import write_report
    from steprl.run.reporting.report_data import read_run

    try:
        return write_report([read_run(run_dir)], Path(run_dir) / "report.html")
    except (OSError, ValueError, SteprlError) as e:
        warn(f"steprl: the report could not be written ({type(e).__name__}: {e}); try `steprl report {run_dir}`")
        return None


def run(args: argparse.Namespace) -> int:
    """Check every run directory first, then read them and write the page."""
    for r in args.runs:
        if not (Path(r) / "config.yaml").is_file():
            raise SteprlError(f"{r}: not a steprl run directory (no config.yaml); expected runs/<name>")
    out = default_out(args.runs, args.out)
    if out.is_dir():
        raise SteprlError(f"--out {out}: is a directory; expected an .html file path")
    from steprl.run.reporting.report import write_report
    from steprl.run.reporting.report_data import read_run

    path = write_report([read_run(r) for r in args.runs], out)
    emit(f"report: {path}")
    return 0
