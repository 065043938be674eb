"""Your own data by config (issue 20 #10): steprl/QA-v0 on a JSONL the test writes, steprl/ReasoningGym-v0;
`eval` and `envs` accept the ids `train` accepts and eval warns about episodes that ended in errors (#4)."""

import json
import subprocess
import sys

import pytest

from steprl.envs.qa_file import HELD_OUT_SEEDS, QAFileEnv, held_out, numeric_match


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "steprl.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def write_qa(path, n=40, pad=""):
    path.write_text("".join(json.dumps({"q": f"{pad}{i}+{i % 7}=?", "a": str(i + i % 7)}) + "\n" for i in range(n)))
    return path


def test_the_split_is_seeded_stable_and_follows_the_seed_layout(tmp_path):
    env = QAFileEnv(str(write_qa(tmp_path / "qa.jsonl")), question_field="q", answer_field="a", scorer="numeric")
    assert list(env.held) == [i for i, (q, _) in enumerate(env.items) if held_out(0, q, 0.2)] and env.held and env.train
    assert {env.task_for_seed(s).context["index"] for s in range(200)} <= set(env.train)
    assert {env.task_for_seed(HELD_OUT_SEEDS + s).context["index"] for s in range(200)} <= set(env.held)
    assert numeric_match(" 1,000.0 ", "1000") == 1.0 and numeric_match("x", "1") == 0.0


def test_a_jsonl_trains_from_the_command_line_and_evaluates(tmp_path):
    qa = write_qa(tmp_path / "qa.jsonl")
    kwargs = f"env.kwargs={{path: {qa}, question_field: q, answer_field: a, scorer: numeric, format: compact}}"
    r = cli("train", "smoke", f"run.root={tmp_path}", "run.name=qa", "env.id=steprl/QA-v0", kwargs,
            "stages=[rl,eval]", "rl.steps=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("eval", str(tmp_path / "qa"), "--episodes", "8", cwd=tmp_path)
    assert r.returncode == 0 and "steprl/QA-v0" in r.stdout, r.stderr[-2000:]
    assert "warning" not in r.stderr
    long = write_qa(tmp_path / "long.jsonl", pad="x" * 300)  # every prompt exceeds max_episode_tokens
    r = cli("eval", str(tmp_path / "qa"), "--episodes", "8", "--env-kwargs",
            json.dumps({"path": str(long), "question_field": "q", "answer_field": "a", "format": "compact"}),
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: 8/8 episodes of" in r.stderr and "exceeds max_episode_tokens" in r.stderr, r.stderr
    r = cli("envs", "steprl/QA-v0", "--demo", "0", "--env-kwargs",
            json.dumps({"path": str(qa), "question_field": "q", "answer_field": "a"}), cwd=tmp_path)
    assert r.returncode == 0 and "[end] reward=1" in r.stdout, r.stderr[-2000:]


def test_reasoning_gym_trains_from_the_command_line(tmp_path):
    pytest.importorskip("reasoning_gym", reason="optional extra steprl[reasoning] not installed")
    r = cli("train", "smoke", f"run.root={tmp_path}", "run.name=rg", "env.id=steprl/ReasoningGym-v0",
            "env.kwargs={dataset: basic_arithmetic, size: 20, format: compact}", "stages=[rl,eval]", "rl.steps=1",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "rg" / "summary.json").read_text())["completed"] == ["rl", "eval"]
