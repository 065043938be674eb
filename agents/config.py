"""Config sections owned by `agents/`: the tokenizer and the policy model."""

from __future__ import annotations

from dataclasses import dataclass, field

from steprl.agents.chat_date import DEFAULT_CHAT_DATE, chat_date_problem


@dataclass
class TokenizerConfig:
    """Which tokenizer to use."""

    path: str | None = None
    """A local tokenizer directory (a user's own); None builds steprl's offline character tokenizer."""


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear layer of a Llama/Qwen2 decoder layer (peft's `all-linear` for these models, head excluded)."""


@dataclass
class LoraConfig:
    """LoRA adapters (peft) trained instead of the full weights; `r` 0 is full fine-tuning.

    Only the adapters train and have optimizer state; the base weights stay frozen, are named by their
    sha256 in every checkpoint, and are sent to rollout workers once: each policy version sends the
    adapter alone (agents/lora.py).
    """

    r: int = 0
    """Adapter rank; 0 trains the full weights (no adapters)."""
    alpha: float = 16.0
    """LoRA alpha: the adapter's update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter's input. Only 0 is accepted: a dropout mask is drawn from the global RNG in the
    learner's forward, so its log-probs would differ from the sampler's and between learner world sizes, and
    resume and replay could not be exact (steprl sets every dropout of a loaded model to 0 for the same reason)."""
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    """Module names (suffixes, as peft matches them) that get adapters."""

    @property
    def enabled(self) -> bool:
        """True when adapters are trained (r > 0)."""
        return self.r > 0

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = []
        if self.r < 0:
            out.append(("r", f"expected 0 (full fine-tuning) or a positive rank, got {self.r}"))
        if self.alpha <= 0:
            out.append(("alpha", f"expected a positive number, got {self.alpha}"))
        if self.dropout != 0:
            out.append(("dropout", f"only 0 is supported, got {self.dropout}: a dropout mask is random inside the "
                                   "learner's forward, so its log-probs would differ from the sampler's and resume, "
                                   "replay and world-size equality could not be exact"))
        names = list(self.target_modules)
        if not names or not all(isinstance(n, str) and n for n in names):
            out.append(("target_modules", f"expected a non-empty list of module names, got {names}"))
        return out


@dataclass
class ModelConfig:
    """A small causal LM built from a transformers config, or a local `save_pretrained` directory."""

    path: str | None = None
    """Local model directory loaded with from_pretrained(local_files_only=True); None builds from the fields below."""
    arch: str = "llama"
    """Architecture when building: `llama` (LlamaConfig) or `qwen2` (Qwen2Config)."""
    layers: int = 4
    """Number of transformer layers."""
    hidden: int = 128
    """Hidden size."""
    heads: int = 4
    """Attention heads."""
    kv_heads: int = 4
    """Key/value heads (grouped-query attention when < heads)."""
    intermediate: int = 512
    """MLP inner size."""
    max_positions: int = 1024
    """Maximum sequence length (RoPE positions)."""
    chat_date: str = DEFAULT_CHAT_DATE
    """The date (YYYY-MM-DD) a chat template's `strftime_now` returns (Llama 3.x's "Today Date", SmolLM3),
    fixed so prompts do not change with the day a run, resume or replay happens; recorded on the tokenizer
    (agents/chat_date.py). The distillation student uses the teacher's tokenizer, hence its date."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters instead of full fine-tuning (`lora.r` > 0); r 0, the default, trains every weight."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = []
        if self.arch not in ("llama", "qwen2"):
            out.append(("arch", f"expected 'llama' or 'qwen2', got {self.arch!r}"))
        for name in ("layers", "hidden", "heads", "kv_heads", "intermediate", "max_positions"):
            if getattr(self, name) <= 0:
                out.append((name, f"expected a positive integer, got {getattr(self, name)}"))
        if self.heads > 0 and self.hidden % self.heads:
            out.append(("hidden", f"must be divisible by heads ({self.heads}), got {self.hidden}"))
        problem = chat_date_problem(self.chat_date)
        if problem:
            out.append(("chat_date", problem))
        if self.kv_heads > 0 and self.heads % self.kv_heads:
            out.append(("kv_heads", f"must divide heads ({self.heads}), got {self.kv_heads}"))
        out += [(f"lora.{k}", v) for k, v in self.lora.check()]
        return out
