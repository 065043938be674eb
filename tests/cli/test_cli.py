"""The CLI: help lists every command, dry run prints the plan, bad input exits 2 with one line."""

import subprocess
import sys

from steprl.cli import COMMANDS, main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "steprl.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_commands_and_each_has_help(capsys):
    r = run_cli("--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert c in r.stdout
    for c in COMMANDS:
        try:
            main([c, "--help"])
        except SystemExit as e:
            assert e.code == 0
        assert "usage: steprl " + c in capsys.readouterr().out


def test_dry_run_from_another_directory(tmp_path):
    r = run_cli("train", "quickstart", "--dry-run", "rl.steps=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# step 0 plan: 64 episodes (8 groups x 8), 2 micro-batches of 32" in r.stdout
    assert "ray executor: 2 micro-batches of 32 queued; 2 actors each take the next when idle" in r.stdout
    assert "steps: 2" in r.stdout
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_bad_config_exits_2_without_traceback(tmp_path):
    r = run_cli("train", "quickstart", "rl.stepz=1", cwd=tmp_path)
    assert r.returncode == 2
    assert "did you mean 'rl.steps'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "nothing-here", cwd=tmp_path)
    assert r.returncode == 2 and "no such file and no preset" in r.stderr


def test_bad_arguments_exit_2():
    r = run_cli("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
