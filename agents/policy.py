"""A policy: model + tokenizer + turn format, saved and loaded as one `save_pretrained` directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from steprl.agents.chat import TurnFormat, make_turn_format
from steprl.agents.chat_date import record_chat_date
from steprl.agents.config import ModelConfig, TokenizerConfig
from steprl.agents.model import build_model, load_model
from steprl.agents.tokenizer import load_tokenizer


@dataclass
class Policy:
    """What an agent acts with."""

    model: PreTrainedModel
    """The causal LM (float32, eval mode)."""
    tokenizer: PreTrainedTokenizerBase
    """Its tokenizer."""
    turn_format: TurnFormat
    """How prompts, observations and turns become ids."""


def build_policy(model_cfg: ModelConfig, tok_cfg: TokenizerConfig, seed: int) -> Policy:
    """Tokenizer from `tok_cfg`, then the model from `model_cfg` sized to it (or loaded from model_cfg.path).

    A tokenizer with a chat template gets `model_cfg.chat_date` recorded on it (agents/chat_date.py);
    the character tokenizer has no template, and its saved files stay as they were.
    """
    tok = load_tokenizer(tok_cfg)
    if getattr(tok, "chat_template", None):
        record_chat_date(tok, model_cfg.chat_date)
    if model_cfg.path is not None:
        model = load_model(model_cfg.path)
    else:
        model = build_model_for(model_cfg, tok, seed)
    if model.get_input_embeddings().num_embeddings < len(tok):
        raise ValueError(f"model vocabulary ({model.get_input_embeddings().num_embeddings}) is smaller than "
                         f"the tokenizer's ({len(tok)})")
    return Policy(model, tok, make_turn_format(tok))


def build_model_for(model_cfg: ModelConfig, tok: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A fresh model from `model_cfg` sized to `tok`, with its pad/bos/eos ids (bos 1, eos 2 when it has none)."""
    bos = 1 if tok.bos_token_id is None else tok.bos_token_id
    eos = 2 if tok.eos_token_id is None else tok.eos_token_id
    return build_model(model_cfg, len(tok), seed, tok.pad_token_id, bos, eos)


def save_policy(policy: Policy, path: str | Path) -> None:
    """Write model (safetensors) and tokenizer into one directory that transformers loads as-is."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(str(p))
    policy.tokenizer.save_pretrained(str(p))


def load_policy(path: str | Path) -> Policy:
    """Load a directory written by `save_policy` (or any local model + tokenizer directory)."""
    tok = load_tokenizer(str(path))
    return Policy(load_model(path), tok, make_turn_format(tok))
