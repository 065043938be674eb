"""The offline character tokenizer: layout, determinism, save/load, plain-text encoding."""

from __future__ import annotations

import subprocess
import sys

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from steprl.agents.config import TokenizerConfig
from steprl.agents.tokenizer import CHARSET, build_char_tokenizer, encode_markup, encode_text, load_tokenizer


def test_layout_and_specials():
    tok = build_char_tokenizer()
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<bos>", "<eos>")
    assert " " in CHARSET and "\n" in CHARSET and "\t" in CHARSET
    assert not set("\x0b\x0c\r") & set(CHARSET)
    assert len(tok) == 4 + len(CHARSET) == 101
    ids = encode_text(tok, CHARSET)
    assert ids == list(range(4, 4 + len(CHARSET)))
    assert tok.decode(ids) == CHARSET


def test_special_text_in_observation_stays_characters():
    tok = build_char_tokenizer()
    ids = encode_text(tok, "<eos>")
    assert ids == [tok.convert_tokens_to_ids(c) for c in "<eos>"]
    assert len(ids) == 5 and tok.eos_token_id not in ids
    assert encode_markup(tok, "a<eos>") == [tok.convert_tokens_to_ids("a"), 2]
    # an unknown character becomes <unk>, never vanishes
    assert encode_text(tok, "a\u00e9b") == [
        tok.convert_tokens_to_ids("a"),
        tok.unk_token_id,
        tok.convert_tokens_to_ids("b"),
    ]


def test_deterministic_across_processes(tmp_path):
    build_char_tokenizer().save_pretrained(tmp_path / "a")
    code = ("from steprl.agents.tokenizer import build_char_tokenizer; "
            f"build_char_tokenizer().save_pretrained({str(tmp_path / 'b')!r})")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_save_load_as_normal_dir(tmp_path):
    tok = build_char_tokenizer()
    tok.save_pretrained(tmp_path)
    text = "calc 12*7 <eos>\n\tok"
    for loaded in (
        AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True),
        PreTrainedTokenizerFast.from_pretrained(str(tmp_path), local_files_only=True),
        load_tokenizer(str(tmp_path)),
        load_tokenizer(TokenizerConfig(path=str(tmp_path))),
    ):
        assert encode_text(loaded, text) == encode_text(tok, text)
        assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
        assert loaded.decode(encode_text(loaded, text)) == text


def test_load_default_and_missing():
    assert len(load_tokenizer(TokenizerConfig())) == 101
    with pytest.raises(FileNotFoundError):
        load_tokenizer("/nonexistent/tokenizer/dir")
