"""Config sections owned by `agents/`: the tokenizer and the policy model."""

from __future__ import annotations

from dataclasses import dataclass

from steprl.agents.chat_date import DEFAULT_CHAT_DATE, chat_date_problem


@dataclass
class TokenizerConfig:
    """Which tokenizer to use."""

    path: str | None = None
    """A local tokenizer directory (a user's own); None builds steprl's offline character tokenizer."""


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
        return out
