"""A QA file is read and split once per process (finding 11): a worker's 16 env copies share one parse, a changed
file is read again, and the split is one pass over the items (no per-item rebuild of the held-out set)."""

from __future__ import annotations

import builtins
import json
import os
from types import SimpleNamespace

import gymnasium as gym

import steprl.envs  # noqa: F401  (registers steprl/QA-v0)
from steprl.envs import qa_data
from steprl.envs.qa_file import QAFileEnv
from steprl.rollout.workers import RolloutWorker


def write(path, n: int, answer=lambda i: str(2 * i)) -> str:
    path.write_text("".join(json.dumps({"question": f"What is {i}+{i}?", "answer": answer(i)}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return str(path)


def count_calls(monkeypatch, name: str) -> list[int]:
    """Wrap qa_data.<name> so each call appends to the returned list."""
    calls: list[int] = []
    real = getattr(qa_data, name)

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(qa_data, name, spy)
    return calls


def test_a_workers_16_envs_parse_the_file_once(tmp_path, monkeypatch) -> None:
    parses = count_calls(monkeypatch, "_parse")
    path = write(tmp_path / "qa.jsonl", 300)
    worker = SimpleNamespace(envs={}, spec=SimpleNamespace(env_kwargs={"path": path, "scorer": "numeric"}))
    envs = RolloutWorker._envs(worker, "steprl/QA-v0", 16)  # the worker's own construction path
    assert len(envs) == 16 and len({id(e) for e in envs}) == 16
    assert len(parses) == 1
    first = envs[0].unwrapped
    assert all(e.unwrapped.items is first.items and e.unwrapped.held == first.held for e in envs)
    assert [e.reset(seed=s)[0] for s, e in enumerate(envs)] == [
        gym.make("steprl/QA-v0", path=path, scorer="numeric").reset(seed=s)[0] for s in range(16)]


def test_a_changed_file_is_read_again(tmp_path, monkeypatch) -> None:
    parses = count_calls(monkeypatch, "_parse")
    path = write(tmp_path / "qa.jsonl", 50)
    assert QAFileEnv(path).items[3] == ("What is 3+3?", "6")
    stat = os.stat(path)
    write(tmp_path / "qa.jsonl", 50, answer=lambda i: str(2 * i + 1))  # same size: only the contents differ
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a filesystem with coarse mtimes
    assert QAFileEnv(path).items[3] == ("What is 3+3?", "7")
    assert len(parses) == 2


def test_the_split_of_50k_items_is_one_pass(tmp_path, monkeypatch) -> None:
    n = 50_000
    path = write(tmp_path / "qa.jsonl", n)
    draws = count_calls(monkeypatch, "held_out")
    sets: list[int] = []

    def counting_set(*args):
        sets.append(1)
        return builtins.set(*args)

    monkeypatch.setattr(qa_data, "set", counting_set, raising=False)  # module-level name shadows the builtin
    env = QAFileEnv(path)
    assert len(draws) == n  # one seeded draw per item
    assert len(sets) <= 2  # the old code rebuilt set(held) for every item: 50k sets of ~10k entries
    assert len(env.held) + len(env.train) == n and sorted(env.held + env.train) == list(range(n))
    assert 0.19 * n < len(env.held) < 0.21 * n  # binomial(50k, 0.2): std 89, these bounds are 11 std away
