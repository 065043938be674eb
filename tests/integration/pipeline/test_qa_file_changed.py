"""A QA run whose file changed afterwards (finding 8): `steprl resume` and `steprl replay` refuse it, naming the file
and both sha256s, before any work, and leave the run directory as it was; with the file restored, replay works."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import yaml


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "steprl.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def tree(root) -> dict[str, tuple[int, str]]:
    """Every file under root: (mtime_ns, sha256 of its bytes)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_and_replay_refuse_a_changed_qa_file(tmp_path) -> None:
    qa = tmp_path / "qa.jsonl"
    original = "".join(json.dumps({"q": f"{i}+{i % 7}=?", "a": str(i + i % 7)}) + "\n" for i in range(40))
    qa.write_text(original, encoding="utf-8")
    pinned = hashlib.sha256(original.encode()).hexdigest()
    kwargs = f"env.kwargs={{path: {qa}, question_field: q, answer_field: a, scorer: numeric, format: compact}}"
    r = cli("train", "smoke", f"run.root={tmp_path}", "run.name=qa", "env.id=steprl/QA-v0", kwargs,
            "stages=[rl]", "rl.steps=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "qa"
    assert yaml.safe_load((run / "config.yaml").read_text())["env"]["kwargs"]["sha256"] == pinned

    qa.write_text(json.dumps({"q": "a new first line?", "a": "1"}) + "\n" + original, encoding="utf-8")
    now = hashlib.sha256(qa.read_bytes()).hexdigest()
    before = tree(run)
    for args in (("resume", str(run), "rl.steps=2"), ("replay", str(run), "--step", "0")):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stdout[-1000:], r.stderr[-2000:])
        assert str(qa) in r.stderr and pinned in r.stderr and now in r.stderr, (args, r.stderr[-2000:])
        assert "Traceback" not in r.stderr
    assert tree(run) == before  # nothing created, nothing altered

    qa.write_text(original, encoding="utf-8")
    r = cli("replay", str(run), "--step", "0", cwd=tmp_path)
    assert r.returncode == 0 and "trajectories identical" in r.stdout, r.stderr[-2000:]
