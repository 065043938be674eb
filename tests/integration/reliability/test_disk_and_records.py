"""Disk full while writing metrics, rollouts or a checkpoint; damaged rollout records under `steprl replay`.

Disk full: a clear error naming the file, the previous checkpoint byte-identical, no partial files, and
resume reaches the same final state as an undisturbed run. Records: exit 2 naming file and line.
"""

from __future__ import annotations

import builtins
import errno
import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
from digests import tree_digest
from relhelp import snapshot_tree

import steprl.rollout.store
import steprl.run.files.checkpoint
import steprl.run.reporting.metrics
from steprl.errors import SteprlError
from steprl.pipeline import resume, train
from steprl.rollout.store import RecordWriteError
from steprl.run.files.run_dir import open_run_dir

RUN = ["rl.steps=4", "rl.checkpoint_every=2", "warmup.cache=true", "eval.episodes=4", "eval.micro_batch=4"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One run root for the module (the warm-up cache is shared by every run in it)."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def baseline(root):
    """An undisturbed 4-step run."""
    from steprl.config import load_config

    train(load_config("smoke", [f"run.root={root}", "run.name=base", "run.threads=1", *RUN]))
    return root / "base"


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullFile:
    """A file whose writes fail with ENOSPC."""

    def __init__(self, f, before) -> None:
        self._f, self._before = f, before

    def write(self, data):
        self._before()
        raise _enospc()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _full_disk_open(should_fail, before):
    """An `open` whose files fail on write when should_fail(path, mode)."""

    def fake_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _FullFile(f, before) if should_fail(str(path), mode) else f

    return fake_open


@pytest.mark.parametrize("target", ["metrics", "rollouts", "checkpoint"])
def test_disk_full_is_a_clear_error_keeps_the_previous_checkpoint_and_resumes(
    smoke, root, baseline, monkeypatch, target
):
    cfg = smoke(*RUN, name=f"full-{target}", root=root)
    run_dir = root / f"full-{target}"
    prev = run_dir / "checkpoints" / "step_000002"
    seen: dict = {}

    def before():  # the moment the disk fills: remember the previous checkpoint's bytes
        seen.setdefault("prev", snapshot_tree(prev))

    if target == "metrics":
        monkeypatch.setattr(
            steprl.run.reporting.metrics,
            "open",
            _full_disk_open(
                lambda p, m: (
                    p.endswith("metrics.jsonl")
                    and prev.is_dir()
                    and (run_dir / "rollouts" / "step_000003.jsonl.gz").exists()
                ),
                before,
            ),
            raising=False,
        )
        err_type, needle = steprl.run.reporting.metrics.MetricsError, "metrics.jsonl"
    elif target == "rollouts":
        monkeypatch.setattr(
            steprl.rollout.store, "open", _full_disk_open(lambda p, m: "step_000003" in p, before), raising=False
        )
        err_type, needle = RecordWriteError, "step_000003.jsonl.gz"
    else:
        real = steprl.run.files.checkpoint.save_state

        def failing_save_state(state, directory, stem):
            if "step_000004" in str(directory):
                before()
                raise _enospc()
            return real(state, directory, stem)

        monkeypatch.setattr(steprl.run.files.checkpoint, "save_state", failing_save_state)
        err_type, needle = steprl.run.files.checkpoint.CheckpointError, "checkpoint step_000004"
    with pytest.raises(err_type) as e:
        train(cfg)
    msg = str(e.value)
    assert needle in msg and "No space left on device" in msg and "\n" not in msg
    assert target == "rollouts" or isinstance(e.value, SteprlError)  # exit 2 from the CLI, one line
    assert "prev" in seen and snapshot_tree(prev) == seen["prev"]  # previous checkpoint byte-identical
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000002"
    assert not list(run_dir.rglob("*.tmp")) and not list((run_dir / "checkpoints").glob(".tmp_*"))  # no partial files
    monkeypatch.undo()
    _, rcfg = open_run_dir(run_dir)
    rcfg.run.threads = 1
    resume(run_dir, rcfg)
    assert tree_digest(run_dir, 4) == tree_digest(baseline, 4)
    print(f"\nFIGURE disk-full-{target}: {type(e.value).__name__}: {msg[:160]}; previous checkpoint unchanged; "
          f"resume == undisturbed")


# ----------------------------------------------------------------------------- damaged rollout records


def _lines(p: Path) -> list[bytes]:
    return gzip.decompress(p.read_bytes()).split(b"\n")


def _write(p: Path, lines: list[bytes]) -> None:
    p.write_bytes(gzip.compress(b"\n".join(lines), mtime=0))


def _tamper_token(lines: list[bytes]) -> list[bytes]:
    rec = json.loads(lines[1])
    rec["tokens"][len(rec["tokens"]) // 2] += 1  # the old digest is kept
    return [lines[0], json.dumps(rec, sort_keys=True, separators=(",", ":")).encode(), *lines[2:]]


RECORD_CASES = {
    "truncated gzip": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a complete gzip file"),
    "non-JSON line": (lambda p: _write(p, [*_lines(p)[:2], b"{not json", *_lines(p)[3:]]), ":3: not valid JSON"),
    "tampered token, old digest": (lambda p: _write(p, _tamper_token(_lines(p))), ":2: digest mismatch for episode"),
    "dropped record": (lambda p: _write(p, [*_lines(p)[:2], *_lines(p)[3:]]), "header says 8 trajectories, found 7"),
}


@pytest.mark.parametrize("case", [*RECORD_CASES, "step that does not exist"])
def test_replay_refuses_damaged_records_naming_file_and_line(capsys, tmp_path, baseline, case):
    from steprl.cli import main

    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    rec = run / "rollouts" / "step_000001.jsonl.gz"
    step = "1"
    if case in RECORD_CASES:
        damage, needle = RECORD_CASES[case]
        damage(rec)
        needle = (
            f"{rec}" + ("" if needle.startswith(":") else ": ") + needle if not needle.startswith("header") else needle
        )
    else:
        step, needle = "99", "no rollout record for step 99"
    before = snapshot_tree(run)
    capsys.readouterr()
    rc = main(["replay", str(run), "--step", step])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert str(rec) in err or case == "step that does not exist"
    assert snapshot_tree(run) == before


def test_replay_of_an_intact_record_passes(capsys, baseline):
    """Non-vacuity: the same command on the undamaged run proves the step identical."""
    from steprl.cli import main

    assert main(["replay", str(baseline), "--step", "1"]) == 0
    assert "8/8 trajectories identical" in capsys.readouterr().out
