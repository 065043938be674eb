"""Fail fast: everything a run needs is checked before its directory is created or a model is built.

The env is built once with its kwargs (and must be a text env, and pass its own `preflight_problems` check if it
has one); every stage must find what it needs
(expert demonstrations for warm-up and the student's warm-up, a teacher for stand-alone distillation);
`ray.address` must answer; the CPUs the run reserves in Ray (rollout workers, learner ranks) must exist in its
cluster; `run.device=cuda` needs a GPU. Sizes were bounded when the config was loaded (steprl/limits.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from steprl.config import Config
from steprl.errors import ConfigError


def build_env(env_id: str, kwargs: dict[str, Any]) -> Any:
    """`gym.make(env_id, **kwargs)`, any failure a ConfigError naming the env and its kwargs."""
    import gymnasium as gym

    import steprl.envs  # noqa: F401  (registers steprl/* ids)

    try:
        return gym.make(env_id, **kwargs)
    except Exception as e:  # noqa: BLE001 - a user's env may raise anything; the run has not started
        raise ConfigError(f"env {env_id!r} cannot be made with env.kwargs={kwargs}: {type(e).__name__}: {e}") from None


def env_problems(cfg: Config, env: Any) -> list[str]:
    """What the stages miss in this env: text spaces, and demonstrations where a warm-up needs them."""
    from gymnasium import spaces

    out = []
    if not isinstance(env.action_space, spaces.Text) or not isinstance(env.observation_space, spaces.Text):
        out.append(f"env {cfg.env.id!r} is not a text env (action space {env.action_space}); a Discrete env plays "
                   f"through env.id=steprl/Discrete-v0 env.kwargs={{env_id: {cfg.env.id.rpartition(':')[2]}}}")
    wants_demos = "warmup" in cfg.stages or ("distill" in cfg.stages and cfg.distill.student_warmup_steps > 0)
    if wants_demos and not callable(getattr(env.unwrapped, "demonstration", None)):
        who = "the warmup stage" if "warmup" in cfg.stages else "distill.student_warmup_steps"
        out.append(f"{who} needs expert demonstrations and env {cfg.env.id!r} has none (no `demonstration` "
                   "method); drop the warm-up: stages=[rl,eval] (and distill.student_warmup_steps=0)")
    own_check = getattr(env.unwrapped, "preflight_problems", None)  # an env's own check (OpenEnv: seeds honoured)
    if callable(own_check):
        try:
            out += list(own_check())
        except Exception as e:  # noqa: BLE001 - the env failed while being checked: that is the problem to report
            out.append(f"env {cfg.env.id!r} failed its own check: {type(e).__name__}: {e}")
    return out


def device_problem(cfg: Config) -> str | None:
    """Why `run.device` cannot be used on this machine, naming the key (None when it can)."""
    if cfg.run.device != "cuda":
        return None
    from steprl.agents.device import cuda_available

    if not cuda_available():
        return ("config key 'run.device': cuda, but torch sees no CUDA device on this machine "
                "(torch.cuda.is_available() is False); use run.device=cpu or auto")
    return None


def _cpus(n: float) -> str:
    return f"{n:g} CPU" + ("" if n == 1 else "s")


def ray_cpu_problem(cfg: Config) -> str | None:
    """Why the Ray actors of this run (rollout workers, learner ranks) cannot all be placed on its cluster, naming
    the keys to change (None when they fit or the run uses no Ray). Checked before any work: otherwise the run
    warms up first, then waits for a placement group that never comes."""
    from steprl.run.learning.topology import ray_cpu_demand

    demand = ray_cpu_demand(cfg)
    want = sum(n for _, n in demand)
    if want <= 0:  # no Ray, or actors that reserve nothing: nothing to place
        return None
    from steprl.rollout.ray_setup import cluster_cpus

    have, where = cluster_cpus(cfg.ray.address, cfg.ray.num_cpus)
    if want <= have + 1e-9:  # Ray counts resources in units of 1e-4
        return None
    fix = "lower rollout.workers, rollout.num_cpus_per_worker or learner.cpus_per_rank (none of them changes the data)"
    scale = math.floor(100 * have / want) / 100  # the same shares, scaled to fit
    if scale > 0:
        rc, lc = cfg.rollout, cfg.learner
        parts = [f"rollout.num_cpus_per_worker={math.floor(100 * scale * rc.num_cpus_per_worker) / 100:g}"
                 if rc.executor == "ray" else "",
                 f"learner.cpus_per_rank={math.floor(100 * scale * lc.cpus_per_rank) / 100:g}"
                 if lc.world_size > 1 else ""]
        fix += ", e.g. " + " ".join(p for p in parts if p)
    if not cfg.ray.address:
        fix += "; or give the embedded Ray more with ray.num_cpus, or join a larger cluster with ray.address"
    return (f"this run reserves {_cpus(want)} in Ray ({' + '.join(t for t, _ in demand)}) but {where} has "
            f"{_cpus(have)}: {fix}")


def model_source_problems(cfg: Config) -> list[str]:
    """Model and tokenizer sources (directories, GGUF files, `pkg:` names) that are not there or not readable."""
    from steprl.agents.model_source import source_problem

    named = [(cfg.model.path, "model.path"), (cfg.tokenizer.path, "tokenizer.path")]
    if "distill" in cfg.stages:
        named.append((cfg.distill.student.path, "distill.student.path"))
    return [p for p in (source_problem(spec, what) for spec, what in named) if p]


def adapter_problems(cfg: Config) -> list[str]:
    """LoRA settings (`model.lora`, `distill.student.lora`) the installed libraries or the models cannot take."""
    from steprl.agents.lora import lora_problems

    out = lora_problems(cfg.model, "model.lora")
    if "distill" in cfg.stages:
        out += lora_problems(cfg.distill.student, "distill.student.lora")
    return out


def _layers_in(model_dir: Path) -> int | None:
    """num_hidden_layers of a save_pretrained directory's config.json (None when it is not one)."""
    try:
        return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def teacher_layer_count(cfg: Config, standalone_distill: bool) -> int | None:
    """Decoder layers of the distillation teacher, read without loading it (None when that cannot be told cheaply:
    the stage then checks it on the loaded model). Inside `train` the teacher is `model`; standalone, the newest
    checkpoint of `distill.teacher` (or that directory itself)."""
    if standalone_distill:
        if cfg.distill.teacher is None:
            return None
        root = Path(cfg.distill.teacher)
        ckpts = sorted((root / "checkpoints").glob("step_*/model")) if (root / "checkpoints").is_dir() else []
        for d in (*reversed(ckpts), root / "model", root):
            n = _layers_in(d)
            if n is not None:
                return n
        return None
    if cfg.model.path is None:
        return int(cfg.model.layers)
    from steprl.agents.model_source import gguf_path, is_gguf_source

    if not is_gguf_source(cfg.model.path):
        return _layers_in(Path(cfg.model.path))
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(gguf_path(cfg.model.path)))
        arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        return int(reader.fields[f"{arch}.block_count"].parts[-1][0])
    except Exception:  # noqa: BLE001  (no gguf library or an unusual file: the stage checks the loaded model)
        return None


def student_layer_problem(cfg: Config, standalone_distill: bool) -> str | None:
    """`distill.student_layers` naming a layer the teacher does not have."""
    if "distill" not in cfg.stages and not standalone_distill or cfg.distill.student_layers is None:
        return None
    n = teacher_layer_count(cfg, standalone_distill)
    top = max(int(i) for i in cfg.distill.student_layers)
    if n is not None and top >= n:
        return (f"distill.student_layers names layer {top}, but the teacher has {n} decoder layers "
                f"(indices 0-{n - 1})")
    return None


def check_run(cfg: Config, standalone_distill: bool = False) -> None:
    """Raise ConfigError (one line) for the first thing this run would fail on; builds the env once."""
    from steprl.run.reporting.trackers import check_installed

    check_installed(cfg.run.loggers)  # a missing tracking library, named with its extra, before anything else
    problems = []
    if standalone_distill:
        if cfg.distill.teacher is None:
            problems.append("distill.teacher is not set: pass distill.teacher=<checkpoint dir or run dir>")
    bad_device = device_problem(cfg)
    if bad_device:
        problems.append(bad_device)
    problems += model_source_problems(cfg)
    if not problems:  # the model sources are readable: their layers can be listed
        problems += adapter_problems(cfg)
        bad_layers = student_layer_problem(cfg, standalone_distill)
        if bad_layers:
            problems.append(bad_layers)
    env = build_env(cfg.env.id, dict(cfg.env.kwargs))
    try:
        problems += env_problems(cfg, env)
    finally:
        env.close()
    if cfg.rollout.executor == "ray" and cfg.ray.address:
        from steprl.rollout.ray_setup import ray_address_problem

        bad = ray_address_problem(cfg.ray.address, cfg.ray.connect_timeout_s)
        if bad:
            problems.append(bad)
    if not problems:  # only now: it may join `ray.address` (known to answer) to ask for its resources
        bad = ray_cpu_problem(cfg)
        if bad:
            problems.append(bad)
    if problems:
        raise ConfigError(problems[0])
