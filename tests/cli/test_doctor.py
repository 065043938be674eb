"""`steprl doctor` (issue #32): per-kernel fingerprints of this machine, diffed against the recorded ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steprl.cpu import cpu_flags

RECORDS = Path(__file__).resolve().parents[2] / "docs" / "kernel-fingerprints"


def _doctor(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steprl.cli", "doctor", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_recorded_files_name_their_machine_and_pins():
    recs = {p.stem: json.loads(p.read_text()) for p in RECORDS.glob("*.json")}
    assert {r["vendor"] for r in recs.values()} >= {"GenuineIntel", "AuthenticAMD"}
    for name, rec in recs.items():
        assert rec["cpu"] and rec["pins"]["MKL_CBWR"] and rec["capability"] and len(rec["ops"]) >= 61, name


def test_diff_of_two_records_names_the_differing_ops(tmp_path):
    """The measured cross-vendor picture: under MKL_CBWR=COMPATIBLE only AdamW parts Intel from AMD."""
    out = _doctor("--diff", str(RECORDS / "intel-xeon-spr-amx.portable-mkl-compatible.json"),
                  str(RECORDS / "amd-epyc-zen3-avx2.portable-mkl-compatible.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "60 of 61 ops identical; differ: adamw x3" in out.stdout


@pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="portable pins need an x86-64 CPU with AVX2+FMA")
def test_doctor_fingerprints_this_machine_and_writes_a_record(tmp_path):
    (tmp_path / "recs").mkdir()
    (tmp_path / "recs" / "other.json").write_text((RECORDS / "intel-xeon-spr-amx.portable.json").read_text())
    out = _doctor("--against", str(tmp_path / "recs"), "--out", str(tmp_path / "mine.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    mine = json.loads((tmp_path / "mine.json").read_text())
    assert mine["pins"]["MKL_CBWR"] == "AVX2" and mine["capability"] == "AVX2" and len(mine["ops"]) == 63
    assert "this machine:" in out.stdout and "other [same pins" in out.stdout and "ops identical" in out.stdout
    # the same kernels computed again in another fresh process: the same bits (one code path with itself)
    (tmp_path / "recs" / "mine.json").write_text((tmp_path / "mine.json").read_text())
    again = _doctor("--against", str(tmp_path / "recs"), cwd=tmp_path)
    assert "mine [same pins" in again.stdout and "63 of 63 ops identical" in again.stdout


def test_bad_arguments_are_one_line_errors(tmp_path):
    bad = _doctor("--set", "FOO=1", cwd=tmp_path)
    assert bad.returncode == 2 and "--set 'FOO=1'" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "x.json").write_text("{not json")
    bad = _doctor("--diff", str(tmp_path / "x.json"), str(tmp_path / "x.json"), cwd=tmp_path)
    assert bad.returncode == 2 and "x.json" in bad.stderr and "Traceback" not in bad.stderr
