"""Config sections owned by `rollout/`: how episodes are sampled and where they run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingConfig:
    """Token sampling for training rollouts (evaluation may force greedy)."""

    temperature: float = 1.0
    """Softmax temperature (> 0). The learner applies the same temperature to its log-probs."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 disables."""
    top_p: float = 1.0
    """Nucleus: keep the smallest prefix of tokens reaching probability p; 1.0 disables."""
    max_new_tokens: int = 48
    """Token budget of one agent turn."""
    max_episode_tokens: int = 512
    """Token budget of a whole episode (prompt, turns and observations)."""


@dataclass
class RolloutConfig:
    """The rollout pool: how many episodes a step plays, in which micro-batches, on which executor."""

    executor: str = "ray"
    """`ray` (actors) or `inline` (same process; tests, replay, debugging). Where workers run."""
    backend: str = "hf"
    """How workers generate turns (rollout/backends/): `hf` (transformers, fused forward, KV cache) or a
    `module:attr` import path to a factory taking the WorkerSpec and returning a TurnGenerator."""
    workers: int = 2
    """Number of rollout workers (Ray actors). Never changes the data."""
    groups: int = 8
    """Tasks per step (GRPO groups)."""
    group_size: int = 8
    """Episodes per task; members of a group share the env seed and differ in sample key."""
    micro_batch: int = 16
    """Episodes generated together; membership is [k*B, (k+1)*B), fixed by episode index."""
    max_retries: int = 3
    """Times a micro-batch is re-played after its worker died before the step fails."""
    micro_batch_timeout_s: float = 0.0
    """A micro-batch with no result after this many seconds counts as a dead worker: the actor is killed and
    replaced, the micro-batch re-played (Ray only). 0 waits forever."""
    staleness: int = 0
    """0: step N is played with the weights of step N. 1: with those of step N-1 (pipelined)."""
    worker_threads: int = 1
    """torch threads inside each rollout worker."""
    fast_forward: bool = True
    """Decode with the fused inference forward (agents/fast_forward.py) when the model is Llama/Qwen2; it gives
    transformers' log-probs to float rounding. Part of the data's recipe: replay uses the run's setting."""
    num_cpus_per_worker: float = 1.0
    """Ray CPU resource per worker."""
    num_gpus_per_worker: float = 0.0
    """Ray GPU resource per worker."""
    dtype: str = "float32"
    """Compute precision of the sampler's forward: float32, or bfloat16 (the fused forward's matmuls on bf16
    copies of the weights, norms, attention and the LM head in float32; transformers' forward under autocast).
    Log-probs always come from float32 logits. Part of the data's recipe: replay uses the run's setting."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Token sampling parameters."""

    @property
    def episodes_per_step(self) -> int:
        """groups x group_size."""
        return self.groups * self.group_size

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = []
        if self.executor not in ("ray", "inline"):
            out.append(("executor", f"expected 'ray' or 'inline', got {self.executor!r}"))
        from steprl.rollout.backends import backend_problem  # local: a `module:attr` backend is imported to check it

        bad_backend = backend_problem(self.backend)
        if bad_backend:
            out.append(("backend", bad_backend))
        for name in ("workers", "groups", "group_size", "micro_batch", "worker_threads"):
            if getattr(self, name) <= 0:
                out.append((name, f"expected a positive integer, got {getattr(self, name)}"))
        if self.dtype not in ("float32", "bfloat16"):
            out.append(("dtype", f"expected float32 or bfloat16, got {self.dtype!r}"))
        if self.micro_batch_timeout_s < 0:
            out.append(("micro_batch_timeout_s", f"expected >= 0 (0 = no limit), got {self.micro_batch_timeout_s}"))
        if self.max_retries < 0:
            out.append(("max_retries", f"expected >= 0, got {self.max_retries}"))
        if self.staleness not in (0, 1):
            out.append(("staleness", f"expected 0 or 1, got {self.staleness}"))
        n = self.episodes_per_step
        if self.micro_batch > 0 and self.groups > 0 and self.group_size > 0 and n % self.micro_batch:
            why = f"must divide the episodes per step (groups*group_size = {n}), got {self.micro_batch}"
            out.append(("micro_batch", why))
        s = self.sampling
        if not s.temperature > 0:
            out.append(("sampling.temperature", f"expected > 0, got {s.temperature}"))
        if s.top_k < 0:
            out.append(("sampling.top_k", f"expected >= 0, got {s.top_k}"))
        if not 0 < s.top_p <= 1:
            out.append(("sampling.top_p", f"expected in (0, 1], got {s.top_p}"))
        for name in ("max_new_tokens", "max_episode_tokens"):
            if getattr(s, name) <= 0:
                out.append((f"sampling.{name}", f"expected a positive integer, got {getattr(s, name)}"))
        if self.num_cpus_per_worker < 0 or self.num_gpus_per_worker < 0:
            out.append(("num_cpus_per_worker", "resources must be >= 0"))
        return out
