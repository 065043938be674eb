"""LoRA adapters through peft: which weights train, what checkpoints and weight syncs carry, how a worker
decodes with them.

A LoRA policy is a `peft.PeftModel` (task CAUSAL_LM) around the base model: the adapters' A matrices come
from peft's own init drawn under a seed (global RNG forked, so the caller's is untouched), B is zero, so the
wrapped model starts as the function the base computes. The base is frozen: the optimizer, its state, the
rollback snapshots, checkpoints and each policy version's weight sync hold the adapter alone (the trainable
entries of the state dict, learners/trainer.py `trainable_state`), in the model's state-dict naming; peft's
saved naming (`...lora_A.weight` for `...lora_A.default.weight`) appears only in adapter directories. The base
is named by `base_identity` (sha256 of its tensors, the same before and after wrapping).

Rollout workers decode with the adapter merged (`MergedLora`): the fused forward (agents/fast_forward.py)
reads plain weight matrices, and merged layers run one matmul where unmerged ones run three. Each version
restores the base from a pristine copy before merging, so the merged bits depend on (base, adapter) alone,
never on the versions a worker saw before: a replacement worker and `steprl replay` decode the same bits.
The learner computes unmerged (autograd through the adapters), so learner and sampler log-probs differ by
float rounding, as they already do between the fused and the transformers forward.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import math
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from steprl.agents.config import LORA_TARGETS, LoraConfig, ModelConfig
from steprl.errors import SteprlError

ADAPTER = "default"
"""The one adapter name steprl gives peft."""
ADAPTER_FILE = "adapter_model.safetensors"
"""peft's adapter weights file in an adapter directory."""
_SAVED_NAME = re.compile(r"\.(lora_[AB])\.weight$")


class LoraError(SteprlError):
    """LoRA asked for where it cannot work: peft missing, targets the model lacks, weights that do not fit."""


def _peft() -> Any:
    """The peft module, or a LoraError saying how to install it (an optional extra)."""
    try:
        import peft
    except ImportError:
        raise LoraError("model.lora.r > 0 needs peft, which is not installed: pip install 'steprl[lora]'") from None
    return peft


def is_lora(model: Any) -> bool:
    """True for a model wrapped with adapters by `add_lora` (a peft model)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def peft_config(cfg: LoraConfig) -> Any:
    """peft's LoraConfig for `cfg`: plain LoRA (no bias, no DoRA or rsLoRA), dropout 0."""
    peft = _peft()
    return peft.LoraConfig(r=int(cfg.r), lora_alpha=float(cfg.alpha), lora_dropout=0.0,
                           target_modules=sorted(set(cfg.target_modules)), bias="none", task_type="CAUSAL_LM")


def add_lora(model: torch.nn.Module, cfg: LoraConfig, seed: int) -> Any:
    """`model` wrapped with fresh trainable adapters (base frozen); same (model, cfg, seed) -> same bits."""
    peft = _peft()
    config = peft_config(cfg)
    missing = [t for t in config.target_modules if not any(n.split(".")[-1] == t for n, _ in model.named_modules())]
    if missing:
        linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise LoraError(f"model.lora.target_modules names {missing}, which the model does not have; its linear "
                        f"layers are {linear}")
    with torch.random.fork_rng(devices=[]), _quiet_peft():  # peft's own draws are discarded: caller's RNG kept
        wrapped = peft.get_peft_model(model, config, adapter_name=ADAPTER)
    _draw_adapters(wrapped, seed)
    return wrapped


@torch.no_grad()
def _draw_adapters(model: torch.nn.Module, seed: int) -> None:
    """Redraw every A from a local generator seeded with `seed`, in sorted name order, from the distribution peft
    uses (kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))); B stays zero. The bits then depend
    on (model, targets, seed) alone, not on the order in which a peft version draws (as `init_weights` does for
    the base)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed) & ((1 << 63) - 1))
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if ".lora_A." in name:
            bound = 1.0 / math.sqrt(p.shape[1])
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound)


def linear_layer_names(model_cfg: ModelConfig) -> set[str]:
    """The names (last component) of the linear layers of the model `model_cfg` gives, found on a skeleton
    built on the meta device (no weights read); for a GGUF source, those of the Llama/Qwen2 decoders
    transformers dequantizes it into. For preflight: adapters may only target these."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from steprl.agents.model import hf_config
    from steprl.agents.model_source import is_gguf_source

    if model_cfg.path is not None and is_gguf_source(model_cfg.path):
        return {*LORA_TARGETS, "lm_head"}
    if model_cfg.path is None:
        config = hf_config(model_cfg, vocab_size=8)
    else:
        config = AutoConfig.from_pretrained(str(model_cfg.path), local_files_only=True)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return {n.split(".")[-1] for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)}


def lora_problems(model_cfg: ModelConfig, what: str) -> list[str]:
    """Why adapters as `model_cfg.lora` asks (the config key `what`) cannot be trained, or []; for preflight,
    before a run directory exists."""
    if not model_cfg.lora.enabled:
        return []
    if importlib.util.find_spec("peft") is None:
        return [f"{what}.r={model_cfg.lora.r} needs peft, which is not installed: pip install 'steprl[lora]'"]
    have = linear_layer_names(model_cfg)
    missing = sorted(set(model_cfg.lora.target_modules) - have)
    if missing:
        return [f"{what}.target_modules names {missing}, which the model does not have; its linear layers are "
                f"{sorted(have)}"]
    return []


def lora_config_of(model: Any) -> LoraConfig:
    """The steprl LoraConfig a peft model was wrapped with (to build its twin in another process)."""
    return _from_peft(model.peft_config[ADAPTER])


def read_lora_config(directory: Path) -> LoraConfig:
    """The LoraConfig of a peft adapter directory (`adapter_config.json`)."""
    try:
        return _from_peft(_peft().LoraConfig.from_pretrained(str(directory)))
    except (ValueError, TypeError, OSError) as e:
        raise LoraError(f"{directory}: unreadable adapter_config.json ({e})") from None


def _from_peft(c: Any) -> LoraConfig:
    """steprl's LoraConfig for a peft LoraConfig (dropout 0: the only value steprl trains or decodes with)."""
    return LoraConfig(r=int(c.r), alpha=float(c.lora_alpha), dropout=0.0, target_modules=sorted(c.target_modules))


def is_adapter_key(name: str) -> bool:
    """True for an adapter tensor's name (peft's `lora_A`/`lora_B`, in its state-dict or its saved naming)."""
    return ".lora_A." in name or ".lora_B." in name


def base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of a LoRA model's frozen base tensors, in its state-dict naming: what a rollout
    worker is sent once, before any adapter."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if not is_adapter_key(k)}


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy any subset of a LoRA model's state-dict tensors (its base, its adapter, or both) into it, bit for
    bit; LoraError naming the tensors that do not fit (an adapter of another rank or other targets)."""
    own = model.state_dict()
    unknown = sorted(k for k in weights if k not in own)
    bad = sorted(k for k, v in weights.items() if k in own and (v.shape != own[k].shape or v.dtype != own[k].dtype))
    if unknown or bad:
        raise LoraError(f"weights do not fit the LoRA model (another r or target_modules?): unknown "
                        f"{unknown[:3]}, shape or dtype differs {bad[:3]}")
    with torch.no_grad():
        for k, v in weights.items():
            own[k].copy_(v)


def read_adapter(directory: Path) -> dict[str, torch.Tensor]:
    """The adapter of a peft adapter directory (`adapter_model.safetensors`) in the model's state-dict naming
    (peft saves `...lora_A.weight` for the state dict's `...lora_A.default.weight`)."""
    from safetensors.torch import load_file

    f = Path(directory) / ADAPTER_FILE
    if not f.is_file():
        raise LoraError(f"{directory}: no {ADAPTER_FILE} (not a peft adapter directory)")
    return {_SAVED_NAME.sub(rf".\1.{ADAPTER}.weight", k): v for k, v in load_file(str(f)).items()}


def base_identity(model: torch.nn.Module) -> str:
    """sha256 over the base weights' names, shapes, dtypes and bytes, the same for a plain model and for it
    wrapped with adapters (peft's `base_model.model.` prefix and `.base_layer` dropped): names a LoRA run's
    frozen base in its checkpoints, so an adapter is only ever applied to the base it was trained on."""
    from steprl.agents.model import hash_tensors

    return hash_tensors(hashlib.sha256(), sorted(plain_base_state(model).items())).hexdigest()


def plain_base_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base weights under the plain model's names (a plain model's own state dict as it is)."""
    state = model.state_dict()
    if not is_lora(model):
        return dict(state)
    return {k.removeprefix("base_model.model.").replace(".base_layer.", "."): v for k, v in state.items()
            if not is_adapter_key(k)}


def plain_base_model(model: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model holding a LoRA model's base weights (adapters left out), float32, eval."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):  # its random init is overwritten below
        plain = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    plain.load_state_dict(plain_base_state(model), strict=False)  # a tied head is the embedding
    return plain.eval()


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 reads a transformers attribute deprecated in 5.x; the FutureWarning says nothing to our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def save_adapter(model: Any, directory: Path) -> None:
    """peft's save_pretrained of the adapter alone (adapter_model.safetensors, adapter_config.json, README.md)."""
    with _quiet_peft():
        model.save_pretrained(str(directory), save_embedding_layers=False)


def merged_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model computing what `model` computes, the adapter merged into its weights (peft's
    merge_and_unload on a copy); a plain model is returned as a copy."""
    if not is_lora(model):
        return copy.deepcopy(model)
    return copy.deepcopy(model).merge_and_unload()


class MergedLora:
    """A rollout worker's LoRA model: decodes with the adapter merged into the base.

    `model` is the plain model the worker decodes with (weights arrive with `load`); adapters are added in
    place, so the fused forward reading `model`'s weight matrices sees the merged ones. The base of every
    adapted layer is kept pristine, and each `load` restores it before merging, so the merged bits are a
    function of (base, adapter) alone.
    """

    def __init__(self, model: torch.nn.Module, cfg: LoraConfig) -> None:
        """Wrap `model` (adapters zero until the first `load`); `model` stays the decoding module."""
        self.peft = add_lora(model, cfg, seed=0)  # A's init is replaced by every adapter `load`
        self.peft.eval()
        self.model = self.peft.get_base_model()
        lora_layer = _peft().tuners.lora.LoraLayer
        self.layers = {n: m for n, m in self.model.named_modules() if isinstance(m, lora_layer)}
        self.pristine = {n: m.get_base_layer().weight.detach().clone() for n, m in self.layers.items()}

    @torch.no_grad()
    def load(self, weights: dict[str, torch.Tensor]) -> None:
        """Load base tensors and/or an adapter (`load_weights` namings), then merge the adapter into the base."""
        for n, m in self.layers.items():  # un-merge exactly: the pristine base, not W - s*B@A (rounds)
            m.get_base_layer().weight.copy_(self.pristine[n])
            m.merged_adapters.clear()  # peft's record of what is merged, matching the restored weights
        load_weights(self.peft, weights)
        new_base = any(not is_adapter_key(k) for k in weights)
        for n, m in self.layers.items():
            if new_base:
                self.pristine[n].copy_(m.get_base_layer().weight)
            m.merge(adapter_names=[ADAPTER])
