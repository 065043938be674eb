"""Tokenizers: steprl's offline character tokenizer, a user's own tokenizer directory, and plain-text encoding.

The character tokenizer is built from code alone (no hub, no training), so two processes
build byte-identical tokenizers: ids 0..3 are `<pad>`, `<bos>`, `<eos>`, `<unk>`, then one
token per character of `string.printable` minus `\\x0b\\x0c\\r`, in that order.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from steprl.agents.config import TokenizerConfig
from steprl.agents.model_source import resolve_model_dir

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
CHARSET = "".join(c for c in string.printable if c not in "\x0b\x0c\r")
"""The characters of the character tokenizer, in id order (after the special tokens)."""


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the offline character tokenizer: one token per printable ASCII character, plus specials.

    `<pad>` is id 0; `<bos>`, `<eos>` and `<unk>` follow (an unknown character becomes `<unk>`,
    it never disappears). Decoding concatenates characters (no added spaces, no clean-up).
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in CHARSET:
        vocab[c] = len(vocab)
    # BPE with no merges splits text into characters; no pre-tokenizer, no normalizer.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )
    tok.add_special_tokens({"additional_special_tokens": []})
    return tok


def load_tokenizer(source: TokenizerConfig | str | Path | None) -> PreTrainedTokenizerBase:
    """Load a tokenizer: a `TokenizerConfig` (path None builds the char tokenizer) or a local directory.

    Directories load with `AutoTokenizer.from_pretrained(dir, local_files_only=True)`; a GGUF file or
    `pkg:PACKAGE/FILE.gguf` loads from its cached dequantized directory (agents/model_source.py); a tokenizer
    without a pad token gets its eos token as pad (logged).
    """
    path = source.path if isinstance(source, TokenizerConfig) else source
    if path is None:
        return build_char_tokenizer()
    p = resolve_model_dir(path)
    if not p.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {p}")
    tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer at {p} has neither a pad nor an eos token")
        log.info("tokenizer at %s has no pad token; using eos %r as pad", p, tok.eos_token)
        tok.pad_token = tok.eos_token
    return tok


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of `text` with special-token parsing OFF (\"<eos>\" in the text stays characters).

    No bos/eos are added. Use for observations, tool results, system prompts and agent text.
    """
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def encode_markup(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of template markup with special-token parsing ON (for chat-template control text only)."""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
