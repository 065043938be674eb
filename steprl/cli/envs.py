"""`steprl envs`: list the registered envs, print an expert demonstration, or play an env from stdin."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from steprl.console import emit
from steprl.errors import SteprlError


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `envs` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "envs",
        help="list registered envs, show a demonstration (--demo SEED) or play one (--play SEED)",
        description="Without ID: list steprl's envs. With ID: --demo SEED prints the expert "
        "demonstration as a transcript; --play SEED reads your turns from stdin, one per line.",
    )
    p.add_argument("id", nargs="?", help="env id, e.g. steprl/Calculator-v0")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--demo", type=int, metavar="SEED", help="print the expert demonstration for SEED")
    mode.add_argument("--play", type=int, metavar="SEED", help="play SEED interactively (turns from stdin)")
    p.add_argument("--format", default=None, help="turn format: hermes (default) or compact")
    p.add_argument("--imperfect", type=float, default=0.0, help="imperfect_rate for --demo (default 0)")
    p.add_argument("--all", action="store_true", help="list every Gymnasium id, not only steprl's")
    p.add_argument("--env-kwargs", default=None, help='JSON kwargs for the env, e.g. \'{"path": "qa.jsonl"}\'')
    p.set_defaults(run=run)
    return p


def _make(env_id: str, fmt: str | None, env_kwargs: str | None = None) -> Any:
    import json

    import gymnasium as gym

    from steprl.envs.registry import env_id_problem

    bad = env_id_problem(env_id)  # the ids `train` accepts, `module:Env-v0` included
    if bad:
        raise SteprlError(f"{bad}; run `steprl envs` to list them")
    try:
        kwargs = json.loads(env_kwargs) if env_kwargs else {}
    except json.JSONDecodeError as e:
        raise SteprlError(f"--env-kwargs is not valid JSON: {e}") from None
    if fmt:
        kwargs["format"] = fmt
    try:
        return gym.make(env_id, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a user's env may raise anything
        raise SteprlError(f"cannot make {env_id!r} with {kwargs}: {exc}") from None


def _list(show_all: bool) -> int:
    from steprl.envs import ENVS
    from steprl.envs.registry import known_env_ids, steprl_env_ids

    ids = known_env_ids() if show_all else steprl_env_ids()
    width = max((len(i) for i in ids), default=0)
    for env_id in ids:
        desc = ENVS.get(env_id, ("", ""))[1]
        emit(f"{env_id:<{width}}  {desc}".rstrip())
    return 0


def _header(info: dict[str, Any], obs: str) -> None:
    if info.get("system"):
        emit("[system]\n" + str(info["system"]))
    emit("[user]\n" + obs)


def _demo(env_id: str, seed: int, fmt: str | None, imperfect_rate: float, env_kwargs: str | None) -> int:
    env = _make(env_id, fmt, env_kwargs)
    demo_fn = getattr(env.unwrapped, "demonstration", None)
    if demo_fn is None:
        raise SteprlError(f"{env_id} has no expert demonstration")
    obs, info = env.reset(seed=seed)
    _header(info, obs)
    total = 0.0
    for turn in demo_fn(seed, imperfect_rate):
        emit("[agent]\n" + turn)
        obs, reward, terminated, truncated, info = env.step(turn)
        total += float(reward)
        if obs:
            emit("[env]\n" + obs)
        if terminated or truncated:
            break
    emit(f"[end] reward={total:g} success={bool(info.get('success'))} turns={info.get('turn')}")
    return 0


def _play(env_id: str, seed: int, fmt: str | None, env_kwargs: str | None) -> int:
    env = _make(env_id, fmt, env_kwargs)
    obs, info = env.reset(seed=seed)
    _header(info, obs)
    total = 0.0
    terminated = truncated = False
    for line in sys.stdin:
        turn = line.rstrip("\n")
        obs, reward, terminated, truncated, info = env.step(turn)
        total += float(reward)
        emit("[env]\n" + (obs or "(episode over)"), flush=True)
        if terminated or truncated:
            break
    state = "terminated" if terminated else ("truncated" if truncated else "stopped")
    emit(f"[end] {state} reward={total:g} success={bool(info.get('success'))} turns={info.get('turn', 0)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Execute `steprl envs` for parsed `args`; returns the exit code (bad id: SteprlError, exit 2)."""
    env_id = getattr(args, "id", None)
    fmt = getattr(args, "format", None)
    if env_id is None:
        if args.demo is not None or args.play is not None:
            raise SteprlError("--demo and --play need an env id, e.g. steprl envs steprl/Calculator-v0 --demo 0")
        return _list(bool(getattr(args, "all", False)))
    if args.demo is not None:
        return _demo(env_id, args.demo, fmt, float(getattr(args, "imperfect", 0.0)), args.env_kwargs)
    if args.play is not None:
        return _play(env_id, args.play, fmt, args.env_kwargs)
    _make(env_id, fmt, args.env_kwargs)
    from steprl.envs import ENVS

    emit(f"{env_id}  {ENVS.get(env_id, ('', ''))[1]}".rstrip())
    return 0
