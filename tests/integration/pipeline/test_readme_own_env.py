"""The "Your own environment" example of the guide (docs/guide/environments.md; README's until issue 33) runs exactly
as written (issue 20): the module and YAML are taken from the page, the commands run in a shell in a temporary
directory."""

import os
import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[3] / "docs" / "guide" / "environments.md"


def blocks() -> dict[str, str]:
    text = PAGE.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"<!-- own-env:(\S+) -->\n```\w+\n(.*?)```", text, re.S)}


def test_the_guide_example_trains_replays_evaluates_and_demos(tmp_path):
    b = blocks()
    assert set(b) == {"reverse_env.py", "reverse.yaml", "commands"}
    (tmp_path / "reverse_env.py").write_text(b["reverse_env.py"])
    (tmp_path / "reverse.yaml").write_text(b["reverse.yaml"])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    script = "set -e\n"
    for line in b["commands"].strip().splitlines():
        script += f"{line}\necho '--- {line}'\n"
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    outputs = r.stdout
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert "<call>spell abcd" in outputs or "[end] reward=1 success=True" in outputs
    assert "[end] reward=1 success=True" in outputs
    assert "2/2 RL steps" in outputs or "finished in" in outputs
    assert "trajectories identical" in outputs
    assert "env reverse_env:Reverse-v0" in outputs
    assert (tmp_path / "runs" / "reverse" / "checkpoints" / "step_000000").is_dir()
