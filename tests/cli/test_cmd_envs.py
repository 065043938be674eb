"""`steprl envs`: list, --demo, --play, bad id."""

from __future__ import annotations

import argparse
import io
import sys

import pytest

from steprl.cli import envs as cmd_envs
from steprl.errors import SteprlError


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="steprl")
    cmd_envs.register(p.add_subparsers())
    return p.parse_args(argv)


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_envs.run(parse(["envs"])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == [
        "steprl/Calculator-v0", "steprl/Discrete-v0", "steprl/Guess-v0", "steprl/Lookup-v0", "steprl/OpenEnv-v0",
        "steprl/QA-v0", "steprl/ReasoningGym-v0", "steprl/Verifiers-v0"]
    assert all(len(ln.split(None, 1)[1]) > 10 for ln in lines)


def test_demo_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_envs.run(parse(["envs", "steprl/Calculator-v0", "--demo", "0", "--format", "compact"])) == 0
    assert capsys.readouterr().out == (
        "[system]\nCompute exactly. Tools: <call>calc EXPR</call> Answer: <answer>X</answer>\n"
        "[user]\nWhat is 8655-5600?\n[agent]\n<call>calc 8655-5600</call>\n[env]\n<result>3055</result>\n"
        "[agent]\n<answer>3055</answer>\n[end] reward=1 success=True turns=2\n"
    )


def test_play_from_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n<call>calc 8655-5600</call>\n<answer>3055</answer>\n"))
    assert cmd_envs.run(parse(["envs", "steprl/Calculator-v0", "--play", "0", "--format", "compact"])) == 0
    out = capsys.readouterr().out
    assert "<result>error: no tool call or answer</result>" in out and "<result>3055</result>" in out
    assert out.endswith("[end] terminated reward=1 success=True turns=3\n")


def test_bad_id_names_it() -> None:
    with pytest.raises(SteprlError, match="steprl/Nope-v0"):
        cmd_envs.run(parse(["envs", "steprl/Nope-v0", "--demo", "1"]))
    with pytest.raises(SteprlError, match="need an env id"):
        cmd_envs.run(parse(["envs", "--demo", "1"]))
    with pytest.raises(SteprlError, match="no expert demonstration"):
        cmd_envs.run(parse(["envs", "steprl/Discrete-v0", "--demo", "1"]))


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from steprl.cli import main

    assert main(["envs", "steprl/Nope-v0"]) == 2
    assert "steprl/Nope-v0" in capsys.readouterr().err
    assert main(["envs", "steprl/Guess-v0", "--demo", "2", "--format", "compact"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("reward=1 success=True turns=" + str(len(
        __import__("gymnasium").make("steprl/Guess-v0").unwrapped.demonstration(2))))
