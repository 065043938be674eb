"""The typed config tree of a run, loaded from YAML (a path or a preset in `configs/`) plus dotted overrides.

OmegaConf structured configs do the parsing and type checking; this module adds the
sections, the cross-field checks, and one-line errors that name the key (with a
"did you mean" suggestion for unknown keys). The resolved config is saved with every run.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steprl.agents.config import ModelConfig, TokenizerConfig
from steprl.compose import apply_layer, fit_env_kwargs, gives, is_inside_replaced, nested
from steprl.errors import ConfigError
from steprl.learners.config import LearnerConfig, WarmupConfig
from steprl.limits import size_problems
from steprl.rollout.config import RolloutConfig

STAGES = ("warmup", "rl", "distill", "eval")
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_CONFIG_BYTES = 1 << 20


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
    kernels: str = "native"
    """CPU kernel choice. native: torch/MKL/oneDNN pick the fastest code path for this CPU (results may
    differ bit-wise on another CPU). portable: pin the AVX2 paths (ATEN_CPU_CAPABILITY, MKL_CBWR,
    ONEDNN_MAX_CPU_ISA, thread env) so any x86-64 AVX2 machine gives the same bits (see steprl/run/kernels.py)."""

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for impossible values."""
        out = []
        if not RUN_NAME_RE.match(self.name) or self.name in (".", ".."):
            out.append(("name", f"expected 1-64 characters from [A-Za-z0-9._-] and not '.' or '..', got {self.name!r}"))
        if self.threads <= 0:
            out.append(("threads", f"expected a positive integer, got {self.threads}"))
        if self.device not in ("auto", "cpu", "cuda"):
            out.append(("device", f"expected auto, cpu or cuda, got {self.device!r}"))
        if self.kernels not in ("native", "portable"):
            out.append(("kernels", f"expected native or portable, got {self.kernels!r}"))
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
    then transfers what RL added. 0: the student starts from its own init."""

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
        if self.student_warmup_steps < 0:
            out.append(("student_warmup_steps", f"expected >= 0, got {self.student_warmup_steps}"))
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


@dataclass
class Config:
    """The whole run. Key names are public and stable (run.name, rl.steps, rollout.workers, stages, ...)."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    stages: list[str] = field(default_factory=lambda: ["warmup", "rl", "eval"])
    """Ordered stages to run: any of warmup, rl, distill, eval."""


def preset_names() -> list[str]:
    """Names of the YAML presets shipped in `steprl.configs`."""
    return sorted(p.name[:-5] for p in resources.files("steprl.configs").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(source: str | Path) -> tuple[dict[str, Any], str]:
    """Read a config file or preset with yaml.safe_load; returns (mapping, where-it-came-from)."""
    path = Path(source)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        if str(source) not in preset_names():
            raise ConfigError(
                f"config {str(source)!r}: no such file and no preset of that name (presets: "
                f"{', '.join(preset_names())})"
            )
        text = resources.files("steprl.configs").joinpath(f"{source}.yaml").read_text()
        where = f"preset {source}"
    else:
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist (presets: {', '.join(preset_names())})")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {str(path)!r} is larger than {MAX_CONFIG_BYTES} bytes")
        text = path.read_text(errors="replace")
        where = str(path)
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config {where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {where}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data, where


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses anchors/aliases (the 'billion laughs' YAML bomb)."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D401
        """Reject alias nodes before they can expand."""
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases are not allowed (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def _section_type(parts: list[str]) -> Any:
    """The dataclass reached by walking `parts` from Config, or None."""
    obj: Any = Config
    for p in parts:
        hints = typing.get_type_hints(obj) if is_dataclass(obj) else {}
        if p not in hints:
            return None
        obj = hints[p]
    return obj if is_dataclass(obj) else None


def safe_yaml(text: str) -> Any:
    """Parse YAML with the safe loader, refusing aliases (no YAML bombs, no Python tags)."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _suggest(key: str) -> str:
    """A 'did you mean' hint for an unknown dotted key, from the field names at that level."""
    parts = key.split(".")
    section = _section_type(parts[:-1])
    names = [f.name for f in fields(section)] if section else []
    match = difflib.get_close_matches(parts[-1], names, n=1)
    prefix = ".".join(parts[:-1])
    return f" (did you mean '{prefix + '.' if prefix else ''}{match[0]}'?)" if match else ""


def _annotation(key: str) -> str:
    """The declared type of a dotted key, as text (e.g. 'int'), or '' when unknown."""
    parts = key.split(".")
    section = _section_type(parts[:-1])
    hints = typing.get_type_hints(section) if section else {}
    t = hints.get(parts[-1])
    return "" if t is None else getattr(t, "__name__", str(t).replace("typing.", ""))


def _parse_override(item: str) -> tuple[str, Any]:
    """Split `a.b=value`, parsing the value as YAML (so 3 is int, 1e-3 float, [a,b] a list)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. rl.steps=10")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", key):
        raise ConfigError(f"override {item!r}: {key!r} is not a dotted key like rl.steps")
    try:
        value = safe_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _merge(base: DictConfig, data: dict[str, Any], where: str) -> DictConfig:
    """Merge a plain mapping into the structured config, turning OmegaConf errors into ConfigError."""
    try:
        return OmegaConf.merge(base, data)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(_explain(e, where)) from None


def _explain(e: OmegaConfBaseException, where: str) -> str:
    """One line naming the key and what was expected."""
    key = getattr(e, "full_key", None) or ""
    msg = str(e).splitlines()[0]
    if "not in struct" in msg or "Key '" in msg and "not in" in msg:
        return f"{where}: unknown key '{key}'{_suggest(key)}"
    if "Value '" in msg or "could not be converted" in msg or "Invalid type" in msg or "Unsupported value type" in msg:
        want = _annotation(key)
        return f"{where}: wrong type for '{key}': {msg}" + (f" (expected {want})" if want else "")
    return f"{where}: '{key}': {msg}" if key else f"{where}: {msg}"


def load_config(source: str | Path = "quickstart", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a preset name or YAML path, apply `key=value` overrides, validate, return a typed Config.

    Raises ConfigError (one line naming the key) for unknown keys, wrong types and impossible values.
    """
    obj = compose_config(source, overrides)
    validate(obj)
    return obj


def compose_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The typed Config of a preset or YAML path with its overrides, before the value checks.

    Light: it never imports torch (the registry checks of `validate` do), so the CLI can read `run.kernels`
    before torch initialises its kernels. Unknown keys and wrong types still raise ConfigError.
    """
    data, where = _read_yaml(source)
    layers = [(data, where, True)]
    if "base" in data:  # `base: PRESET`: the file is a layer over that preset (see steprl/compose.py)
        layers.insert(0, (*_read_yaml(str(data.pop("base"))), True))
    for item in overrides:
        key, value = _parse_override(item)
        layers.append((nested(key, value), f"override {item!r}", not is_inside_replaced(key)))
    cfg = _merge(OmegaConf.structured(Config), layers[0][0], layers[0][1])
    for d, w, replace in layers[1:]:
        cfg = apply_layer(cfg, d, w, _merge, replace)
    obj: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    if any(gives(d, "env.id") for d, _, _ in layers[1:]):
        obj.env.kwargs = fit_env_kwargs(obj.env.id, obj.env.kwargs, layers[1:])
    return obj


def from_dict(data: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a Config from a plain mapping (e.g. a run's saved config.yaml)."""
    obj: Config = OmegaConf.to_object(_merge(OmegaConf.structured(Config), data, where))  # type: ignore[assignment]
    validate(obj)
    return obj


def validate(cfg: Config) -> None:
    """Cross-field and value checks of every section; raises ConfigError naming the first bad key."""
    problems: list[tuple[str, str]] = []
    for section in ("run", "model", "rollout", "learner", "warmup", "rl", "distill", "eval", "ray"):
        problems += [(f"{section}.{k}", m) for k, m in getattr(cfg, section).check()]
    for s in cfg.stages:
        if s not in STAGES:
            problems.append(("stages", f"unknown stage {s!r}; expected some of {', '.join(STAGES)}"))
    if len(set(cfg.stages)) != len(cfg.stages):
        problems.append(("stages", f"a stage is listed twice: {cfg.stages}"))
    from steprl.envs.registry import env_id_problem  # local: registering envs imports gymnasium

    bad_env = env_id_problem(cfg.env.id)
    if bad_env:
        problems.append(("env.id", bad_env))
    problems += size_problems(cfg)
    if problems:
        key, msg = problems[0]
        more = f" (+{len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConfigError(f"config key '{key}': {msg}{more}")


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (saved as runs/<name>/config.yaml)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as a plain dict."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]
