"""The warm-up cache keys on file contents, loads only entries whose manifest verifies, and gives every
writer its own temporary directory (review finding 9)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from steprl.agents.policy import build_policy, save_policy
from steprl.config import load_config
from steprl.run.loop import sft
from steprl.run.loop.state import RunState
from steprl.run.reporting.metrics import MetricsLogger

WARMUP = ["warmup.steps=2", "warmup.batch_size=2", "warmup.cache=true"]


def _run(tmp_path: Path, *overrides: str) -> RunState:
    """A smoke run state whose policy starts from the weights a real run builds (model section, run.seed)."""
    cfg = load_config("smoke", [*WARMUP, f"run.root={tmp_path}", *overrides])
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return RunState(cfg, run_dir, build_policy(cfg.model, cfg.tokenizer, cfg.run.seed), MetricsLogger(run_dir), {})


def _entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / ".warmup_cache").iterdir())


def test_same_path_with_other_contents_is_another_key(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    model_dir = tmp_path / "model"
    cfg0 = load_config("smoke", [f"run.root={tmp_path}"])
    save_policy(build_policy(cfg0.model, cfg0.tokenizer, 0), model_dir)
    overrides = (f"model.path={model_dir}", f"tokenizer.path={model_dir}", "env.id=steprl/QA-v0",
                 f"env.kwargs={{path: {qa}}}")
    run = _run(tmp_path, *overrides)
    first = sft.warmup_cache_key(run)
    assert sft.warmup_cache_key(run) == first  # a pure function of the config and the files' bytes

    qa.write_text(json.dumps({"question": "1+2", "answer": "3"}) + "\n")  # the QA file: same path, other items
    after_qa = sft.warmup_cache_key(run)
    assert after_qa != first

    save_policy(build_policy(cfg0.model, cfg0.tokenizer, 1), model_dir)  # the model directory: other weights
    after_model = sft.warmup_cache_key(run)
    assert after_model not in (first, after_qa)

    tok = model_dir / "tokenizer_config.json"  # one byte of the tokenizer's files
    tok.write_text(tok.read_text() + " ")
    assert sft.warmup_cache_key(run) not in (first, after_qa, after_model)


def _fresh_entry(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A finished warm-up's cache entry and the weights it trained."""
    run = _run(tmp_path)
    losses, cached_from = sft.warm_up(run, run.policy, "warmup")
    assert cached_from is None and len(losses) == 2
    (entry,) = _entries(tmp_path)
    return entry, {k: v.clone() for k, v in run.policy.model.state_dict().items()}


def _warm_up_again(tmp_path: Path) -> tuple[list[float], str | None, dict[str, torch.Tensor]]:
    run = _run(tmp_path)
    losses, cached_from = sft.warm_up(run, run.policy, "warmup")
    return losses, cached_from, run.policy.model.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    # one code path (the same warm-up, or its saved bytes) compared with itself: bits
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_verified_entry_is_loaded_bitwise(tmp_path):
    torch.set_num_threads(1)
    entry, trained = _fresh_entry(tmp_path)
    losses, cached_from, weights = _warm_up_again(tmp_path)
    assert cached_from == str(entry) and losses == []
    assert _same(weights, trained)


def test_an_entry_with_config_json_but_no_weights_is_rebuilt_not_loaded(tmp_path, caplog):
    torch.set_num_threads(1)
    entry, trained = _fresh_entry(tmp_path)
    (entry / "model" / "model.safetensors").unlink()
    assert (entry / "model" / "config.json").is_file()
    with caplog.at_level(logging.WARNING, logger="steprl.run.loop.sft"):
        losses, cached_from, weights = _warm_up_again(tmp_path)
    assert cached_from is None and len(losses) == 2  # trained afresh ...
    assert _same(weights, trained)                   # ... to the same bits
    assert any("warm-up cache" in r.getMessage() and str(entry) in r.getMessage() for r in caplog.records)
    assert _entries(tmp_path) == [entry]             # rebuilt in place, verified: the next one loads it
    assert _warm_up_again(tmp_path)[1] == str(entry)


def test_a_tampered_weights_file_is_not_loaded(tmp_path, caplog):
    torch.set_num_threads(1)
    entry, trained = _fresh_entry(tmp_path)
    weights_file = entry / "model" / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 0x01  # one bit of the last float: still a loadable safetensors file, other weights
    weights_file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="steprl.run.loop.sft"):
        losses, cached_from, weights = _warm_up_again(tmp_path)
    assert cached_from is None and len(losses) == 2
    assert _same(weights, trained)
    assert any("warm-up cache" in r.getMessage() for r in caplog.records)


def test_an_entry_without_a_manifest_is_not_loaded(tmp_path):
    """An interrupted write (or an entry from before manifests) has weights but no manifest: never loaded."""
    torch.set_num_threads(1)
    entry, trained = _fresh_entry(tmp_path)
    for p in entry.iterdir():  # keep only the saved model: what an entry from before manifests holds
        if p.name != "model":
            p.unlink()
    losses, cached_from, weights = _warm_up_again(tmp_path)
    assert cached_from is None and len(losses) == 2
    assert _same(weights, trained)


def test_two_writers_of_one_key_write_to_their_own_temp_dirs(tmp_path, monkeypatch):
    """Writer A is interrupted between writing its model and publishing it while writer B warms up, writes and
    publishes the same key (two concurrent runs); both succeed, the entry verifies, no temp dir stays behind."""
    torch.set_num_threads(1)
    real_save = sft.save_policy
    written: list[Path] = []

    def save_then_let_the_other_writer_run(policy, path):
        written.append(Path(path))
        real_save(policy, path)
        if len(written) == 1:  # writer A has written its files; writer B runs from start to end now
            b = _run(tmp_path)
            assert sft.warm_up(b, b.policy, "warmup")[1] is None
            written_b.update(b.policy.model.state_dict())

    written_b: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(sft, "save_policy", save_then_let_the_other_writer_run)
    a = _run(tmp_path)
    losses, cached_from = sft.warm_up(a, a.policy, "warmup")
    assert cached_from is None and len(losses) == 2
    assert len(written) == 2 and written[0].parent != written[1].parent  # one temp dir per writer
    monkeypatch.setattr(sft, "save_policy", real_save)
    (entry,) = _entries(tmp_path)                   # one entry, no temp dir left over
    losses, cached_from, weights = _warm_up_again(tmp_path)
    assert cached_from == str(entry) and losses == []  # it verifies and loads
    assert _same(weights, a.policy.model.state_dict()) and _same(weights, written_b)
