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
from steprl.cpu import resolve_kernels
from steprl.errors import ConfigError
from steprl.learners.config import LearnerConfig, WarmupConfig
from steprl.limits import size_problems
from steprl.rollout.config import RolloutConfig
from steprl.sections import DistillConfig, EnvConfig, EvalConfig, RayConfig, RLConfig, RunConfig

STAGES = ("warmup", "rl", "distill", "eval")
MAX_CONFIG_BYTES = 1 << 20
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


# A date stays its text: no config field is a date (model.chat_date is a YYYY-MM-DD string checked by its
# section), and an impossible one like 2026-13-01 must reach that check instead of crashing the parser.
_NoAliasLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)

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

    Raises ConfigError (one line naming the key) for unknown keys, wrong types and impossible values. The env's
    pinned kwargs are filled in (`envs.registry.pin_env_kwargs`: a data file's sha256 that resume/replay check).
    """
    obj = compose_config(source, overrides)
    validate(obj)
    from steprl.envs.registry import pin_env_kwargs  # local, as in validate: registering envs imports gymnasium

    obj.env.kwargs = pin_env_kwargs(obj.env.id, obj.env.kwargs)  # e.g. the QA file's sha256, recorded in config.yaml
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
    obj.run.kernels = resolve_kernels(obj.run.kernels)  # config.yaml records the mode the run computes in
    return obj


def from_dict(data: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a Config from a plain mapping (e.g. a run's saved config.yaml)."""
    obj: Config = OmegaConf.to_object(_merge(OmegaConf.structured(Config), data, where))  # type: ignore[assignment]
    if "kernels" not in (data.get("run") or {}):  # saved before run.kernels existed: those runs were native
        obj.run.kernels = "native"
    obj.run.kernels = resolve_kernels(obj.run.kernels)
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
