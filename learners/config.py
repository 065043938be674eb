"""Config sections owned by `learners/`: the policy-gradient learner, warm-up SFT and the distiller."""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("float32", "bfloat16")
"""Values of `learner.dtype` and `rollout.dtype` (learners/precision.py); here so `import config` needs no torch."""


@dataclass
class OptimizerGuardsConfig:
    """AdamW, its schedule and the stability guards (docs/numerics.md#guards): shared by every trainer's optimizer."""

    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    schedule: str = "constant"
    """Learning-rate schedule after warm-up: constant, linear or cosine (over schedule_steps)."""
    schedule_steps: int = 0
    """Horizon H of the linear/cosine schedule: the decay ends at step H, and every later step runs at
    lr x the floor (0 for RL). 0: the stage's steps (rl.steps). `steprl resume RUN rl.steps=M` records the
    run's old rl.steps here, so extending a run never changes the lr of a step."""
    micro_batch: int = 16
    """Sequences per forward/backward (gradient accumulation); does not change the result beyond rounding."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    spike_window: int = 20
    """Window of recent finite values for spike detection."""
    spike_factor: float = 10.0
    """A loss or grad norm above factor x (robust scale of the window) is a spike and the step is skipped."""
    spike_min_history: int = 5
    """Finite values a spike window must hold before it can flag anything."""
    spike_floor: float = 0.1
    """Absolute floor on the robust scale of a spike window: |x| <= spike_factor x spike_floor is never a spike.
    Needed because a policy-gradient loss with centred advantages sits near 0 (|median|, MAD ~ 1e-8) until
    a KL or entropy term makes it O(0.01), which is no spike."""
    max_consecutive_skips: int = 3
    """After this many skipped steps in a row, roll back (see rollback_steps)."""
    max_rollbacks: int = 3
    """After this many rollbacks, stop with an error. 0: never roll back, and keep no snapshots (checkpoints hold
    the weights and AdamW state only; without it they hold two more copies of both, for a rollback)."""
    rollback_lr_factor: float = 0.5
    """Learning rate multiplier applied at each rollback."""
    rollback_steps: int = 4
    """N: a rollback restores the model and AdamW state from before the last n applied steps, N <= n <= 2N - 1
    (learners/guards.py `RollbackGuard`: the states at the start and after every N-th applied step are kept, the
    newest two, and checkpointed); back to the trainer's start (or the last rollback's landing state) when fewer
    than N steps were applied since it."""

    def check_guards(self) -> list[tuple[str, str]]:
        """(field, problem) pairs for the shared optimizer and guard settings."""
        out = []
        for name in ("lr", "spike_factor", "rollback_lr_factor"):
            if not getattr(self, name) > 0:
                out.append((name, f"expected > 0, got {getattr(self, name)}"))
        for name in ("micro_batch", "spike_window", "spike_min_history", "max_consecutive_skips", "rollback_steps"):
            if getattr(self, name) <= 0:
                out.append((name, f"expected a positive integer, got {getattr(self, name)}"))
        for name in ("weight_decay", "grad_clip", "warmup_steps", "spike_floor", "schedule_steps", "max_rollbacks"):
            if getattr(self, name) < 0:
                out.append((name, f"expected >= 0, got {getattr(self, name)}"))
        from .schedule import SCHEDULES  # the registries import torch: keep `import config` light

        if self.schedule not in SCHEDULES:
            out.append(("schedule", f"expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}"))
        return out


@dataclass
class LearnerConfig(OptimizerGuardsConfig):
    """Policy-gradient update: advantages, loss, optimizer and stability guards (docs/numerics.md#losses)."""

    advantage: str = "grpo"
    """Advantage estimator by registered name (advantages.ADVANTAGES): grpo, rloo, drgrpo, reinforce."""
    adv_eps: float = 1e-6
    """Epsilon added to the group std (GRPO)."""
    filter_zero_groups: bool = False
    """Drop groups whose rewards are all equal (their advantage is exactly 0) from the batch."""
    loss: str = "ppo"
    """Policy loss by registered name (losses.LOSSES): ppo, gspo, cispo."""
    clip_low: float = 0.2
    """PPO ratio lower clip epsilon."""
    clip_high: float = 0.28
    """PPO ratio upper clip epsilon (clip-higher, DAPO)."""
    dual_clip: float = 3.0
    """Dual-clip constant c > 1 for negative advantages; 0 disables (c in (0, 1] would zero their gradient)."""
    tis_cap: float = 2.0
    """Truncated importance sampling cap C on exp(logp_learner - logp_behavior); 0 disables."""
    log_ratio_clamp: float = 20.0
    """Clamp on log-ratios before exp."""
    kl_coef: float = 0.0
    """KL penalty to a frozen reference (k3 estimator); 0 disables and no reference is kept."""
    kl_clamp: float = 10.0
    """Clamp on the per-token k3 value."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient."""
    aggregation: str = "token-mean"
    """token-mean, seq-mean-token-mean or seq-mean-token-sum-norm (Dr.GRPO)."""
    epochs: int = 1
    """Optimizer passes over each step's batch."""
    gspo_clip_low: float = 3e-4
    """GSPO sequence-ratio lower clip epsilon (Zheng et al. 2025, https://arxiv.org/abs/2507.18071)."""
    gspo_clip_high: float = 4e-4
    """GSPO sequence-ratio upper clip epsilon."""
    cispo_clip_high: float = 5.0
    """CISPO: the stop-gradient ratio weight is truncated at 1 + cispo_clip_high (MiniMax-M1)."""
    norm_len: int = 0
    """Constant length L for seq-mean-token-sum-norm (sum / (B x L)); 0 uses rollout.sampling.max_episode_tokens
    (a constant: a trajectory's weight must not depend on its batch-mates' lengths)."""
    reinforce_decay: float = 0.9
    """REINFORCE running-baseline decay: b <- decay * b + (1 - decay) * mean(R); the first batch sets b."""
    world_size: int = 1
    """Data-parallel learner ranks (a power of two). 1: the learner runs in the driver. The weights are
    bitwise the same at every world size (gradients summed in one fixed tree over micro-batch index)."""
    threads_per_rank: int = 0
    """torch threads each rank computes its micro-batches with, world size 1 included; 0: run.threads.
    Float results depend on the thread count, so it is what makes world sizes agree bitwise."""
    cpus_per_rank: float = 1.0
    """CPUs Ray reserves for each rank (world size > 1; placed with a placement group)."""
    dtype: str = "float32"
    """Compute precision of the policy-gradient forward: float32, or bfloat16 (autocast for the transformer
    body; float32 master weights, gradients and AdamW state; LM head, log-softmax, entropy and KL in float32).
    Warm-up SFT and distillation stay float32. Part of the run's recipe: replay re-applies it."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = self.check_guards()
        for name in ("log_ratio_clamp", "kl_clamp"):
            if not getattr(self, name) > 0:
                out.append((name, f"expected > 0, got {getattr(self, name)}"))
        if self.epochs <= 0:
            out.append(("epochs", f"expected a positive integer, got {self.epochs}"))
        for name in ("clip_low", "clip_high", "dual_clip", "tis_cap", "kl_coef", "entropy_coef", "adv_eps",
                     "gspo_clip_low", "gspo_clip_high", "cispo_clip_high", "norm_len"):
            if getattr(self, name) < 0:
                out.append((name, f"expected >= 0, got {getattr(self, name)}"))
        if self.world_size <= 0 or self.world_size & (self.world_size - 1):
            out.append(("world_size", f"expected a power of two (1, 2, 4, ...), got {self.world_size}"))
        if self.threads_per_rank < 0:
            out.append(("threads_per_rank", f"expected >= 0 (0: run.threads), got {self.threads_per_rank}"))
        if self.dtype not in DTYPES:
            out.append(("dtype", f"expected one of {', '.join(DTYPES)}, got {self.dtype!r}"))
        if self.cpus_per_rank < 0:
            out.append(("cpus_per_rank", f"expected >= 0, got {self.cpus_per_rank}"))
        if 0 < self.dual_clip <= 1:
            out.append(("dual_clip", f"expected > 1, or 0 for off, got {self.dual_clip}"))
        if not 0 <= self.reinforce_decay < 1:
            out.append(("reinforce_decay", f"expected in [0, 1), got {self.reinforce_decay}"))
        from .advantages import ADVANTAGES  # the registries import torch: keep `import config` light
        from .losses import AGGREGATIONS, LOSSES

        for name, known in (("advantage", ADVANTAGES), ("loss", LOSSES), ("aggregation", AGGREGATIONS)):
            if getattr(self, name) not in known:
                out.append((name, f"expected one of {', '.join(known)}, got {getattr(self, name)!r}"))
        return out


@dataclass
class WarmupConfig:
    """Supervised warm-up on the env's expert demonstrations (loss on agent tokens only)."""

    steps: int = 800
    """Optimizer steps."""
    batch_size: int = 32
    """Demonstrations per step."""
    lr: float = 2e-3
    """AdamW learning rate (cosine decay to 10%)."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up."""
    imperfect_rate: float = 0.0
    """Fraction of demonstrations in which the expert answers without the tool (often wrong), leaving room for RL."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    length_buckets: int = 1
    """Split each step's batch into this many micro-batches of similar length (sorted by length, each padded to
    its own longest): less padding to compute on. The loss stays the token mean over the whole batch, so only
    the float summation order changes (other bits, same expectation); 1: one padded batch."""
    cache: bool = True
    """Reuse a finished warm-up with the same (config, seed) from `<run.root>/.warmup_cache`."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = []
        for name in ("steps", "batch_size", "length_buckets"):
            if getattr(self, name) <= 0:
                out.append((name, f"expected a positive integer, got {getattr(self, name)}"))
        if self.length_buckets > self.batch_size:
            out.append(("length_buckets", f"expected <= batch_size ({self.batch_size}), got {self.length_buckets}"))
        if not self.lr > 0:
            out.append(("lr", f"expected > 0, got {self.lr}"))
        for name in ("warmup_steps", "grad_clip"):
            if getattr(self, name) < 0:
                out.append((name, f"expected >= 0, got {getattr(self, name)}"))
        if not 0 <= self.imperfect_rate <= 1:
            out.append(("imperfect_rate", f"expected in [0, 1], got {self.imperfect_rate}"))
        return out


@dataclass
class DistillLearnerConfig(OptimizerGuardsConfig):
    """The distillation update (docs/numerics.md#distillation): per-token KL to a frozen teacher, AdamW, the guards."""

    lr: float = 1e-3
    """AdamW learning rate of the student."""
    kl_coef: float = 1.0
    """Weight of the per-token KL (the loss is kl_coef x token-mean KL)."""
    temperature: float = 1.0
    """Temperature applied to both student and teacher logits before the KL."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = self.check_guards()
        if not self.temperature > 0:
            out.append(("temperature", f"expected > 0, got {self.temperature}"))
        if self.kl_coef < 0:
            out.append(("kl_coef", f"expected >= 0, got {self.kl_coef}"))
        return out
