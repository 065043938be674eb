"""The run directory under pressure: one writer at a time (issue 20 #1) and no row appended onto a torn line (#2)."""

import json
import os
import subprocess
import sys

import pytest

from steprl.cli import main
from steprl.run.files.lock import LOCK_NAME, RunLock, RunLocked
from steprl.run.reporting.metrics import MetricsLogger, read_metrics


def _fake_run(tmp_path):
    """A run directory as `train` leaves it (config only is enough to be opened)."""
    from steprl.config import load_config, to_yaml

    cfg = load_config("smoke", [f"run.root={tmp_path}", "run.name=r"])
    d = tmp_path / "r"
    d.mkdir()
    (d / "config.yaml").write_text(to_yaml(cfg))
    return d


def _teacher(tmp_path):
    """A saved smoke-sized policy (a plain save_pretrained directory) to distil from."""
    from steprl.agents.policy import build_policy, save_policy
    from steprl.config import load_config

    cfg = load_config("smoke")
    out = tmp_path / "teacher"
    save_policy(build_policy(cfg.model, cfg.tokenizer, 0), out)
    return out


def test_resume_and_distill_are_refused_while_another_writer_holds_the_run(tmp_path, capsys):
    d, teacher = _fake_run(tmp_path), _teacher(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom steprl.run.files.lock import RunLock\n"
                               f"RunLock(__import__('pathlib').Path({str(d)!r}), 'train').acquire()\n"
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (["resume", str(d)], ["distill", "smoke", f"run.root={tmp_path}", "run.name=r",
                                            f"distill.teacher={teacher}"]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"in use by pid {holder.pid} (steprl train)" in err, err
    finally:
        holder.kill()
        holder.wait()
    assert not (d / "checkpoints").exists() and not (d / "metrics.jsonl").exists()


def test_lock_is_exclusive_released_and_a_stale_record_is_taken_over(tmp_path, caplog):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 7, "command": "resume"}))  # no such pid
    with RunLock(tmp_path, "train"):
        assert "stale lock of pid 4194311" in caplog.text
        with pytest.raises(RunLocked, match=f"pid {os.getpid()} \\(steprl train\\)"):
            RunLock(tmp_path, "resume").acquire()
    with RunLock(tmp_path, "resume"):  # released on exit
        pass


def test_a_torn_last_metrics_line_is_cut_before_appending(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"stage": "rl", "step": 0, "x": 1}\n{"stage": "rl", "step": 1, "generated_')
    logger = MetricsLogger(tmp_path)
    logger.log(1, "rl", {"x": 2})
    lines = path.read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [0, 1]  # every line parses: nothing appended onto the fragment
    assert read_metrics(path)[1]["x"] == 2
