"""A policy: model + tokenizer + turn format, saved and loaded as one `save_pretrained` directory.

A LoRA policy's directory holds its adapter (peft's `adapter_model.safetensors` + `adapter_config.json`),
the tokenizer, and `base.json`: where the frozen base comes from (a model path, or the config and seed it is
built from) and its sha256 (`agents.lora.base_identity`). A base with neither (a distillation student cut
from its teacher's layers) is written beside the adapter in `base/`. Loading rebuilds the base, refuses one
whose sha256 differs, and applies the adapter: bit for bit the policy that was saved.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from steprl.agents.chat import TurnFormat, make_turn_format
from steprl.agents.chat_date import record_chat_date
from steprl.agents.config import LoraConfig, ModelConfig, TokenizerConfig
from steprl.agents.lora import (
    LoraError,
    add_lora,
    base_identity,
    is_lora,
    load_weights,
    plain_base_model,
    read_adapter,
    read_lora_config,
    save_adapter,
)
from steprl.agents.model import build_model, load_model
from steprl.agents.tokenizer import load_tokenizer

BASE_FILE = "base.json"
"""Beside a LoRA policy's adapter: where its frozen base comes from, and its sha256."""
BASE_DIR = "base"
"""Beside a LoRA policy's adapter: its base's save_pretrained directory, when no source rebuilds it."""


@dataclass
class BaseSource:
    """Where a LoRA policy's frozen base comes from (`base.json`), and which exact weights it is."""

    sha256: str
    """`agents.lora.base_identity` of the base weights."""
    path: str | None = None
    """The model path it was loaded from (`model.path` as given: a directory, a GGUF file or pkg:...)."""
    build: dict[str, Any] | None = None
    """The ModelConfig fields (LoRA off) it was built from, with `seed`; None with `path` None: in base/."""
    seed: int = 0
    """The seed it was built with (`build` only)."""


@dataclass
class Policy:
    """What an agent acts with."""

    model: PreTrainedModel
    """The causal LM (float32, eval mode)."""
    tokenizer: PreTrainedTokenizerBase
    """Its tokenizer."""
    turn_format: TurnFormat
    """How prompts, observations and turns become ids."""
    base: BaseSource | None = field(default=None)
    """A LoRA policy's frozen base (None: full weights)."""


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
    policy = Policy(model, tok, make_turn_format(tok))
    if not model_cfg.lora.enabled:
        return policy
    if model_cfg.path is not None:
        source = BaseSource(base_identity(model), path=base_path(model_cfg.path))
    else:
        source = BaseSource(base_identity(model), build=asdict(replace(model_cfg, lora=LoraConfig())), seed=seed)
    return with_lora(policy, model_cfg.lora, seed, source)


def base_path(path: str | Path) -> str:
    """How base.json names a base's model path: absolute (a resume or `steprl eval` may run from another
    directory), except a `pkg:` name, which is found wherever the package is installed."""
    return str(path) if str(path).startswith("pkg:") else str(Path(path).resolve())


def with_lora(policy: Policy, lora: LoraConfig, seed: int, source: BaseSource | None = None) -> Policy:
    """`policy` with fresh adapters on its model (base frozen); `source` says where the base comes from (None:
    it is saved beside the adapter)."""
    source = source or BaseSource(base_identity(policy.model))
    return replace(policy, model=add_lora(policy.model, lora, seed), base=source)


def build_model_for(model_cfg: ModelConfig, tok: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A fresh model from `model_cfg` sized to `tok`, with its pad/bos/eos ids (bos 1, eos 2 when it has none)."""
    bos = 1 if tok.bos_token_id is None else tok.bos_token_id
    eos = 2 if tok.eos_token_id is None else tok.eos_token_id
    return build_model(model_cfg, len(tok), seed, tok.pad_token_id, bos, eos)


def save_policy(policy: Policy, path: str | Path) -> None:
    """Write model (safetensors) and tokenizer into one directory that transformers loads as-is; a LoRA policy
    writes its adapter (peft loads it onto the base), `base.json`, and `base/` when no source rebuilds it."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    if is_lora(policy.model):
        if policy.base is None:
            raise LoraError("a LoRA policy without its base's source cannot be saved (build it with with_lora)")
        save_adapter(policy.model, p)
        (p / BASE_FILE).write_text(json.dumps(asdict(policy.base), sort_keys=True, indent=1))
        if policy.base.path is None and policy.base.build is None:
            plain_base_model(policy.model).save_pretrained(str(p / BASE_DIR))
    else:
        policy.model.save_pretrained(str(p))
    policy.tokenizer.save_pretrained(str(p))


def load_policy(path: str | Path) -> Policy:
    """Load a directory written by `save_policy` (or any local model + tokenizer directory)."""
    tok = load_tokenizer(str(path))
    turn_format = make_turn_format(tok)
    if not (Path(path) / BASE_FILE).is_file():
        return Policy(load_model(path), tok, turn_format)
    source = _read_base_source(Path(path))
    try:
        base = _rebuild_base(Path(path), source, tok)
    except (OSError, ValueError) as e:  # the base's model path is gone or unreadable
        raise LoraError(f"{path}: the base model this adapter was trained on cannot be loaded ({e}); restore "
                        f"{source.path or Path(path) / BASE_DIR}") from None
    found = base_identity(base)
    if found != source.sha256:
        where = source.path or (f"built from its config, seed {source.seed}" if source.build else Path(path) / BASE_DIR)
        raise LoraError(f"{path}: the base model ({where}) is not the one this adapter was trained on: sha256 "
                        f"{found[:16]}..., expected {source.sha256[:16]}... (restore that model, or train again)")
    model = add_lora(base, read_lora_config(Path(path)), 0)  # the adapter below replaces its init
    load_weights(model, read_adapter(Path(path)))
    return Policy(model, tok, turn_format, source)


def _read_base_source(path: Path) -> BaseSource:
    """base.json of a LoRA policy directory, or LoraError naming what is wrong with it."""
    try:
        data = json.loads((path / BASE_FILE).read_text())
        return BaseSource(**data)
    except (ValueError, TypeError) as e:
        raise LoraError(f"{path / BASE_FILE}: unreadable ({e}); expected sha256, path, build, seed") from None


def _rebuild_base(path: Path, source: BaseSource, tok: Any) -> Any:
    """The base model `source` names: loaded from its path, built from its config, or read from base/."""
    if source.path is not None:
        return load_model(source.path)
    if source.build is not None:
        cfg = ModelConfig(**{k: v for k, v in source.build.items() if k != "lora"})
        return build_model_for(cfg, tok, source.seed)
    return load_model(path / BASE_DIR)
