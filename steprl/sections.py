"""The sections of a run's config (run, env, rl, distill, eval, ray): typed dataclasses, each with a
docstring per field and a `check()` of its impossible values. The other sections belong to the packages
that use them (agents, rollout, learners); `steprl.config` assembles the tree."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from steprl.agents.config import ModelConfig

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LOGGERS = ("jsonl", "tensorboard", "wandb", "trackio", "mlflow")
"""The names `run.loggers` accepts (steprl/run/reporting/trackers/ has one module per backend)."""


def logger_problems(names: list[str]) -> list[str]:
    """What is wrong with a `run.loggers` list: unknown or repeated names (whether each is installed is checked
    before a run starts, by steprl.run.reporting.trackers.check_installed, not here: replay needs none of them)."""
    out = [f"unknown logger {n!r}; expected some of {', '.join(LOGGERS)}" for n in names if n not in LOGGERS]
    out += [f"{n!r} is listed twice" for n in sorted({n for n in names if names.count(n) > 1})]
    return out


@dataclass
class RunConfig:
    """Identity of a run: where it lives and the one seed every random number derives from."""

    name: str = "quickstart"
    """Run directory name under `root`: letters, digits, '.', '_', '-' (no '/' or '..')."""
    root: str = "runs"
    """Directory that holds run directories."""
    seed: int = 0
    """The seed: all data is a pure function of (config, seed, step)."""
    threads: int = 2
    """torch threads of the driver/learner process (fixed and recorded: results depend on it)."""
    allow_large: bool = False
    """Accept sizes above the sane bounds of steprl/limits.py (e.g. rollout.group_size > 1024)."""
    device: str = "auto"
    """Where model, learner and inline rollout compute: auto (cuda if torch sees a GPU), cpu or cuda; resolved at
    start and recorded, so resume and replay follow it. Ray rollout workers use cuda with num_gpus_per_worker > 0."""
    kernels: str = "auto"
    """CPU kernel choice. native: torch/MKL/oneDNN pick the fastest code path for this CPU (results may
    differ bit-wise on another CPU). portable: pin the AVX2 paths (ATEN_CPU_CAPABILITY, MKL_CBWR,
    ONEDNN_MAX_CPU_ISA, thread env) so x86-64 AVX2 CPUs of one vendor give the same bits; across vendors (Intel vs
    AMD) MKL takes other branches and bits part, tokens agreeing until the first divergence
    (steprl/run/machine/kernels.py). auto (default): portable where the CPU has AVX2 and FMA, else native; resolved
    when the config is read, so config.yaml records the mode the run used."""
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])
    """Where metrics, held-out evaluations and sampled episodes go: jsonl (always, metrics.jsonl), tensorboard,
    wandb, trackio, mlflow; each of the last four is an optional extra (`pip install 'steprl[wandb]'`, ...).
    Offline: WANDB_MODE=offline, trackio's local store, MLflow in the run directory unless MLFLOW_TRACKING_URI."""
    project: str = "steprl"
    """Project (W&B, trackio) or experiment (MLflow) the run is logged under; the run's name is `run.name`."""
    log_episodes: int = 4
    """Episodes of each training step sent to the loggers as a table: a seeded choice, the same rows on resume
    (0: none)."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = []
        out += [("loggers", p) for p in logger_problems(self.loggers)]
        if not self.project.strip():
            out.append(("project", "expected a non-empty name"))
        if not 0 <= self.log_episodes <= 64:
            out.append(("log_episodes", f"expected 0..64 episodes per step, got {self.log_episodes}"))
        if not RUN_NAME_RE.match(self.name) or self.name in (".", ".."):
            out.append(("name", f"expected 1-64 characters from [A-Za-z0-9._-] and not '.' or '..', got {self.name!r}"))
        if self.threads <= 0:
            out.append(("threads", f"expected a positive integer, got {self.threads}"))
        if self.device not in ("auto", "cpu", "cuda"):
            out.append(("device", f"expected auto, cpu or cuda, got {self.device!r}"))
        if self.kernels not in ("auto", "native", "portable"):
            out.append(("kernels", f"expected auto, native or portable, got {self.kernels!r}"))
        if not 0 <= self.seed < 2**63:
            out.append(("seed", f"expected 0 <= seed < 2**63, got {self.seed}"))
        return out


@dataclass
class EnvConfig:
    """The task: a registered Gymnasium id and its keyword arguments."""

    id: str = "steprl/Calculator-v0"
    """Registered env id (see `steprl envs`)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for gymnasium.make (difficulty, format, max_turns, ...)."""


@dataclass
class RLConfig:
    """The RL step loop."""

    steps: int = 30
    """Number of RL steps."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many steps (and at the end)."""
    keep_last: int = 3
    """Keep the newest K checkpoints ..."""
    keep_every: int = 0
    """... plus every Nth step's checkpoint (0: none)."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = []
        for name in ("steps", "checkpoint_every", "keep_last"):
            if getattr(self, name) <= 0:
                out.append((name, f"expected a positive integer, got {getattr(self, name)}"))
        if self.keep_every < 0:
            out.append(("keep_every", f"expected >= 0, got {self.keep_every}"))
        return out


@dataclass
class DistillConfig:
    """Compress the trained teacher into a smaller student sharing its tokenizer."""

    teacher: str | None = None
    """Teacher checkpoint or run directory (the `rl` stage's policy when run inside `train`)."""
    method: str = "on_policy"
    """on_policy (reverse KL on student samples), off_policy (forward KL on teacher samples) or mixed."""
    mix_fraction: float = 0.5
    """With `mixed`: fraction of steps that are on-policy, chosen by derive(seed, 'mix', step)."""
    steps: int = 40
    """Distillation steps."""
    lr: float = 1e-3
    """Student learning rate."""
    kl_coef: float = 1.0
    """Weight of the per-token KL."""
    checkpoint_every: int = 20
    """Checkpoint interval in steps."""
    temperature: float = 1.0
    """Temperature of both student and teacher distributions inside the KL."""
    full_vocab_max: int = 65536
    """Exact full-vocabulary KL up to this vocabulary size; above it on-policy steps use the sampled per-token
    advantage -(log q - log p_T) through the RL learner, off-policy steps cross-entropy on teacher samples."""
    student: ModelConfig = field(
        default_factory=lambda: ModelConfig(layers=2, hidden=64, heads=2, kv_heads=2, intermediate=256)
    )
    """The student model (built from config or loaded from `student.path`)."""
    student_warmup_steps: int = 0
    """Before distilling, this many SFT steps of the student on the run's warm-up demonstrations (other `warmup.*`
    settings shared, cached like the teacher's warm-up): it learns the protocol cheaply from demos, distillation
    then transfers what RL added. Step k uses the teacher's batch k mod warmup.steps (more steps than the teacher
    repeat its batches). 0: the student starts from its own init."""
    student_warmup_lr: float | None = None
    """Peak learning rate of the student's warm-up (None: warmup.lr). A smaller model often takes a larger one."""
    student_from_teacher: int = 0
    """k > 0: the student is the teacher with every k-th decoder layer kept (layers 0, k, 2k, ...; 2 halves a
    pretrained model) and `student`'s size fields are ignored; 0: the student is built from `student` (or loaded
    from `student.path`)."""
    kl_episodes: int = 0
    """Held-out episodes the student samples to measure its reverse KL to the teacher, before and after (the
    first this many of the eval seeds); 0: all `eval.episodes`. Success is always measured on all of them."""
    student_layers: list[int] | None = None
    """The teacher's decoder layers the student keeps, in order, renumbered from 0 (set instead of
    `student_from_teacher`). Removing one contiguous block of middle layers keeps more of a pretrained model than
    every other layer: on SmolLM2 (30 layers) keeping 0-5 and 21-29 starts at a forward KL of ~4.9 nats/token to
    the teacher, every other layer at ~12.5. null: not used."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = []
        if self.method not in ("on_policy", "off_policy", "mixed"):
            out.append(("method", f"expected on_policy, off_policy or mixed, got {self.method!r}"))
        if not 0 <= self.mix_fraction <= 1:
            out.append(("mix_fraction", f"expected in [0, 1], got {self.mix_fraction}"))
        for name in ("steps", "checkpoint_every"):
            if getattr(self, name) <= 0:
                out.append((name, f"expected a positive integer, got {getattr(self, name)}"))
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                out.append((name, f"expected > 0, got {getattr(self, name)}"))
        if self.kl_coef < 0:
            out.append(("kl_coef", f"expected >= 0, got {self.kl_coef}"))
        if self.kl_episodes < 0:
            out.append(("kl_episodes", f"expected >= 0 (0: all eval.episodes), got {self.kl_episodes}"))
        if self.student_warmup_steps < 0:
            out.append(("student_warmup_steps", f"expected >= 0, got {self.student_warmup_steps}"))
        if self.student_from_teacher < 0:
            out.append(("student_from_teacher", f"expected >= 0 (0: build from student), "
                        f"got {self.student_from_teacher}"))
        if self.student_from_teacher and self.student.path is not None:
            out.append(("student_from_teacher", "set together with student.path: choose one source for the student"))
        if self.student_layers is not None:
            layers = list(self.student_layers)
            if not layers or any(not isinstance(i, int) or i < 0 for i in layers) or any(
                    b <= a for a, b in zip(layers, layers[1:])):
                out.append(("student_layers", f"expected a non-empty, strictly increasing list of layer indices >= 0, "
                            f"got {layers}"))
            if self.student_from_teacher or self.student.path is not None:
                out.append(("student_layers", "set together with student_from_teacher or student.path: choose one "
                            "source for the student"))
        if self.student_warmup_lr is not None and not self.student_warmup_lr > 0:
            out.append(("student_warmup_lr", f"expected > 0 (or null: warmup.lr), got {self.student_warmup_lr}"))
        if self.full_vocab_max <= 0:
            out.append(("full_vocab_max", f"expected a positive integer, got {self.full_vocab_max}"))
        out += [(f"student.{k}", v) for k, v in self.student.check()]
        return out


@dataclass
class EvalConfig:
    """Held-out evaluation (seeds from the 'eval' stream, disjoint from training seeds)."""

    episodes: int = 200
    """Held-out episodes per policy."""
    greedy: bool = True
    """Greedy decoding (temperature 0) instead of sampling."""
    micro_batch: int = 50
    """Episodes generated together during evaluation."""
    timing_repeats: int = 3
    """The eval stage plays each policy this many times (interleaved) and reports the fastest wall time."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        return [
            (n, f"expected a positive integer, got {getattr(self, n)}")
            for n in ("episodes", "micro_batch", "timing_repeats")
            if getattr(self, n) <= 0
        ]


@dataclass
class RayConfig:
    """Where Ray runs."""

    address: str | None = None
    """Address of an existing cluster; None starts an embedded local Ray."""
    num_cpus: int | None = None
    """CPUs the embedded Ray may use (None: all)."""
    connect_timeout_s: float = 10.0
    """`address` must answer within this many seconds, checked before any work starts."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = []
        if self.num_cpus is not None and self.num_cpus <= 0:
            out.append(("num_cpus", f"expected a positive integer, got {self.num_cpus}"))
        if not self.connect_timeout_s > 0:
            out.append(("connect_timeout_s", f"expected > 0, got {self.connect_timeout_s}"))
        return out
