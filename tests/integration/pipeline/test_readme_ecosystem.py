"""README's "Bring an environment from OpenEnv, verifiers or MCP" runs exactly as written (issue 31): the commands
block is taken from README.md and run in a shell, in a copy of the repository's examples/ folder; then a changed
env is replayed and reported as changed."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from steprl.rollout.store import read_step

ROOT = Path(__file__).resolve().parents[3]
for module in ("openenv.core", "fastmcp", "verifiers.v1"):
    pytest.importorskip(module, reason="the openenv, mcp and verifiers extras are part of the test extra")


def commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- ecosystem:commands -->\n```bash\n(.*?)```", text, re.S)
    assert block, "README.md lost its ecosystem:commands block"
    return [line.split("  #")[0].strip() for line in block.group(1).strip().splitlines()]


def shell(lines: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = "set -e\n" + "".join(f"{line}\necho '--- {line}'\n" for line in lines)
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_readme_commands_train_replay_and_evaluate_each_adapter(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    lines = commands()
    r = shell(lines, tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = r.stdout
    here = tmp_path / "examples" / "ecosystem"
    trained = [line.split()[2] for line in lines if line.startswith("steprl train ")]
    assert len(trained) == 3
    for name in ("openenv-guess", "mcp-sums", "verifiers-sums"):
        run = here / "runs" / name
        assert (run / "checkpoints" / "step_000002").is_dir(), name
        assert (run / "summary.json").is_file(), name
    assert out.count("trajectories identical (step 1") == 3, out[-3000:]
    assert (out + r.stderr).count("held-out evaluation: teacher (rl policy)") == 3, r.stderr[-3000:]

    # two Ray rollout workers, each with its own verifiers env serving, play the inline run's data bit for bit
    r = shell(["cd examples/ecosystem && export PYTHONPATH=$PWD",
               "steprl train verifiers_sums.yaml rollout.executor=ray run.name=verifiers-ray"], tmp_path)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    for step in (0, 1):
        inline, ray = (read_step(here / "runs" / n / "rollouts", step) for n in ("verifiers-sums", "verifiers-ray"))
        assert [t.digest for t in inline] == [t.digest for t in ray] and len(inline) == 8
    final = [(here / "runs" / n / "checkpoints" / "step_000002" / "model" / "model.safetensors").read_bytes()
             for n in ("verifiers-sums", "verifiers-ray")]
    assert final[0] == final[1]

    # the OpenEnv game now says something else at reset: replay names the env as what changed
    game = here / "guess_game.py"
    game.write_text(game.read_text().replace("Guess the number from 1", "Guess a number from 1"))
    r = shell(["cd examples/ecosystem && export PYTHONPATH=$PWD", "steprl replay runs/openenv-guess --step 1 || true"],
              tmp_path)
    assert "in the prompt (the env's reset observation): the env changed" in r.stdout, r.stdout[-2000:]
    assert "the env gave other observations than when the run was recorded" in r.stdout
