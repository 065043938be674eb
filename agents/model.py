"""Policy models: a small causal LM built from a transformers config, or a local `save_pretrained` dir.

Building is deterministic: every floating parameter is drawn from a local `torch.Generator`
seeded with `seed`, in sorted parameter-name order, so the same (config, vocab, seed) gives
bitwise-identical weights in any process. No global RNG is touched and nothing is downloaded.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from steprl.agents.config import ModelConfig
from steprl.agents.model_source import resolve_model_dir

log = logging.getLogger(__name__)

INIT_STD = 0.02
"""Standard deviation of the normal init of weight matrices and embeddings (transformers' default)."""

_ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def hf_config(cfg: ModelConfig, vocab_size: int, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
    """The transformers config (LlamaConfig or Qwen2Config) for `cfg`, float32, tied embeddings, sdpa."""
    problems = cfg.check()
    if problems:
        raise ValueError("invalid ModelConfig: " + "; ".join(f"{k}: {v}" for k, v in problems))
    config_cls, _ = _ARCHS[cfg.arch]
    return config_cls(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        dtype="float32",
        attn_implementation="sdpa",
    )


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Re-initialise `model` in place from a local generator: norms 1, biases 0, other tensors N(0, 0.02)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed) & ((1 << 63) - 1))
    seen: set[int] = set()
    for name, p in sorted(model.named_parameters(remove_duplicate=True), key=lambda kv: kv[0]):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if "norm" in name:
            p.fill_(1.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * INIT_STD)


def build_model(
    cfg: ModelConfig, vocab_size: int, seed: int, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2
) -> PreTrainedModel:
    """Build a float32 causal LM from `cfg` with deterministic weights (same seed -> bitwise same weights).

    `cfg.path` set means load that directory instead (`load_model`).
    """
    if cfg.path is not None:
        return load_model(cfg.path)
    config = hf_config(cfg, vocab_size, pad_id, bos_id, eos_id)
    _, model_cls = _ARCHS[cfg.arch]
    # transformers' own init draws from the global RNG: fork it so the caller's state is untouched.
    with torch.random.fork_rng(devices=[]):
        model = model_cls(config).to(torch.float32)
    init_weights(model, seed)
    model.eval()
    log.info("built %s model: %d parameters (seed %d)", cfg.arch, count_parameters(model), seed)
    return model


def load_model(path: str | Path) -> PreTrainedModel:
    """Load a causal LM in float32 (never the network) from a local `save_pretrained` directory, or from a
    GGUF file or `pkg:PACKAGE/FILE.gguf` through its cached dequantized directory (agents/model_source.py)."""
    p = resolve_model_dir(path)
    if not p.is_dir():
        raise FileNotFoundError(f"model directory not found: {p}")
    model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=torch.float32)
    disable_dropout(model)
    model.eval()
    return model


def every_kth_layer(model: PreTrainedModel, k: int) -> PreTrainedModel:
    """A smaller copy of `model` keeping its decoder layers 0, k, 2k, ... (embeddings, final norm and head as
    they are): a distillation student that starts from what the teacher knows instead of from noise."""
    return keep_layers(model, list(range(0, int(model.config.num_hidden_layers), k)))


def keep_layers(model: PreTrainedModel, keep: list[int]) -> PreTrainedModel:
    """A smaller copy of `model` with only the decoder layers `keep` (strictly increasing indices), renumbered
    0..len(keep)-1; embeddings, final norm and head as they are. Raises ValueError naming an index out of range."""
    n = int(model.config.num_hidden_layers)
    if not keep or any(b <= a for a, b in zip(keep, keep[1:])) or keep[0] < 0 or keep[-1] >= n:
        raise ValueError(f"layers to keep must be strictly increasing indices in [0, {n}) (the model has {n} "
                         f"decoder layers), got {keep}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    with torch.random.fork_rng(devices=[]):  # the fresh model's init draws from the global RNG
        small = type(model)(config).to(torch.float32)
    new_index = {old: new for new, old in enumerate(keep)}
    pattern = re.compile(r"^(.*\.layers\.)(\d+)(\..*)$")
    state = {}
    for name, value in model.state_dict().items():
        m = pattern.match(name)
        if m is None:
            state[name] = value.detach().clone()
        elif int(m.group(2)) in new_index:
            state[f"{m.group(1)}{new_index[int(m.group(2))]}{m.group(3)}"] = value.detach().clone()
    small.load_state_dict(state, strict=True)
    small.to(next(model.parameters()).device)
    small.eval()
    return small


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability (config fields and nn.Dropout modules) to 0; returns how many were > 0.

    The learner runs in train mode; with dropout its log-probs would differ from the sampler's (eval-mode)
    ones and draw from the global RNG. RL fine-tuning recipes turn dropout off for the same reason.
    """
    changed = 0
    cfg = getattr(model, "config", None)
    sub = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
    for c in {id(x): x for x in (cfg, sub) if x is not None}.values():
        for name, value in list(vars(c).items()):
            if "dropout" in name and isinstance(value, float) and value > 0:
                setattr(c, name, 0.0)
                changed += 1
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
            m.p = 0.0
            changed += 1
        for name in ("attention_dropout", "dropout"):
            if isinstance(getattr(m, name, None), float) and getattr(m, name) > 0:
                setattr(m, name, 0.0)
                changed += 1
    if changed:
        log.info("dropout set to 0 in %d places of the loaded model (learner and sampler must agree)", changed)
    return changed


def hash_tensors(h: Any, named: Iterable[tuple[str, torch.Tensor]]) -> Any:
    """Feed `h` (a hashlib object) each tensor's name, shape, dtype and bytes, in the given order; returns `h`.

    The one tensor hash: run/learning/weights.py names exact weights with it, agents/lora.py a LoRA base."""
    for k, v in named:
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
