"""A QA run records its file's sha256 (finding 8): a new run's resolved config pins env.kwargs.sha256, and an env
built with a pinned hash refuses a file whose bytes differ, naming the file and both hashes."""

from __future__ import annotations

import hashlib
import json

import pytest

from steprl.config import load_config, to_yaml
from steprl.envs.qa_file import QAFileEnv


def write(path, n: int = 30) -> str:
    path.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": str(i + 1)}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return str(path)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_pinned_hash_is_checked_when_the_env_is_built(tmp_path) -> None:
    path = write(tmp_path / "qa.jsonl")
    pinned = sha(path)
    assert QAFileEnv(path, sha256=pinned).items  # the file it was pinned to: fine
    write(tmp_path / "qa.jsonl", n=31)
    with pytest.raises(ValueError) as e:
        QAFileEnv(path, sha256=pinned)
    assert str(tmp_path / "qa.jsonl") in str(e.value) and pinned in str(e.value) and sha(path) in str(e.value)


def test_a_malformed_pinned_hash_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="sha256 must be 64 hex digits"):
        QAFileEnv(write(tmp_path / "qa.jsonl"), sha256="abc")


def test_a_new_runs_config_pins_the_files_sha256(tmp_path) -> None:
    path = write(tmp_path / "qa.jsonl")
    cfg = load_config("smoke", ["env.id=steprl/QA-v0", f"env.kwargs={{path: {path}, format: compact}}"])
    assert cfg.env.kwargs["sha256"] == sha(path)
    assert f"sha256: {sha(path)}" in to_yaml(cfg)  # what config.yaml records


def test_an_explicit_hash_is_kept_and_other_envs_are_untouched(tmp_path) -> None:
    path = write(tmp_path / "qa.jsonl")
    given = "0" * 64
    cfg = load_config("smoke", ["env.id=steprl/QA-v0", f"env.kwargs={{path: {path}, sha256: '{given}'}}"])
    assert cfg.env.kwargs["sha256"] == given  # checked (and refused) when the env is built, never overwritten
    assert "sha256" not in load_config("smoke").env.kwargs
