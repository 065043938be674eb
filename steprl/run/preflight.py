"""Fail fast: everything a run needs is checked before its directory is created or a model is built.

The env is built once with its kwargs (and must be a text env); every stage must find what it needs
(expert demonstrations for warm-up and the student's warm-up, a teacher for stand-alone distillation);
`ray.address` must answer; `run.device=cuda` needs a GPU. Sizes were bounded when the config was loaded
(steprl/limits.py).
"""

from __future__ import annotations

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


def check_run(cfg: Config, standalone_distill: bool = False) -> None:
    """Raise ConfigError (one line) for the first thing this run would fail on; builds the env once."""
    problems = []
    if standalone_distill:
        if cfg.distill.teacher is None:
            problems.append("distill.teacher is not set: pass distill.teacher=<checkpoint dir or run dir>")
    bad_device = device_problem(cfg)
    if bad_device:
        problems.append(bad_device)
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
    if problems:
        raise ConfigError(problems[0])
