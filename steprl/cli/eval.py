"""`steprl eval POLICY [POLICY ...] --env ID --episodes N`: compare policies on the same held-out seeds.

A POLICY is a checkpoint directory, a run directory (its newest verified checkpoint) or a
save_pretrained directory. Every policy plays the same 'eval'-stream seeds (disjoint from
training seeds) in the same process, so success, speed and size are compared like for like.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from steprl.console import emit, warn
from steprl.errors import SteprlError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` subcommand."""
    p = sub.add_parser("eval", help="evaluate and compare policies on held-out seeds",
                       description="Play the same held-out seeds with every policy and print one table.")
    p.add_argument("policies", nargs="+", metavar="POLICY", help="checkpoint dir, run dir or model dir")
    p.add_argument("--env", default=None, help="env id (default: the first run's env)")
    p.add_argument(
        "--env-kwargs", default=None, help="JSON kwargs for the env (default: the first run's), e.g. '{\"digits\": 3}'"
    )
    p.add_argument("--episodes", type=int, default=200, help="held-out episodes per policy (default 200)")
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the 'eval' stream (default: the first run's run.seed, else 0)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--greedy", dest="greedy", action="store_true", default=True, help="greedy decoding (default)")
    mode.add_argument("--sample", dest="greedy", action="store_false", help="sample with the run's sampling settings")
    p.add_argument("--micro-batch", type=int, default=50, help="episodes generated together (default 50)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON")
    p.add_argument("--plot", dest="plot_path", default=None, help="write a bar chart (PNG)")
    p.set_defaults(run=run)


def run_config_for(policy: Path) -> Any:
    """The saved config of the run a policy belongs to, or None."""
    from steprl.run.files.run_dir import open_run_dir
    from steprl.run.machine.kernels import run_dir_of

    d = run_dir_of(policy)
    return None if d is None else open_run_dir(d)[1]


def run(args: argparse.Namespace) -> int:
    """Evaluate each policy, print the table, optionally write JSON and a plot."""
    from steprl.agents.lora import is_lora, lora_config_of
    from steprl.agents.policy import load_policy
    from steprl.envs.registry import env_id_problem
    from steprl.rollout.config import RolloutConfig, SamplingConfig
    from steprl.rollout.workers import RolloutPool, WorkerSpec
    from steprl.run.files.checkpoint import resolve_policy_dir
    from steprl.run.loop.evaluate import HeldOut, evaluate, format_table
    from steprl.run.machine.torch_setup import setup_torch

    if args.episodes <= 0:
        raise SteprlError(f"--episodes must be a positive integer, got {args.episodes}")
    dirs = [resolve_policy_dir(p) for p in args.policies]
    base = next((c for c in (run_config_for(Path(p)) for p in args.policies) if c is not None), None)
    env_id = args.env or (base.env.id if base else None)
    if env_id is None:
        raise SteprlError("--env is required when no POLICY is inside a run directory")
    bad = env_id_problem(env_id)  # every id `train` accepts, `module:Env-v0` included
    if bad:
        raise SteprlError(f"--env: {bad}")
    env_kwargs = _env_kwargs(args, base, env_id)
    seed = args.seed if args.seed is not None else (base.run.seed if base else 0)
    sampling = base.rollout.sampling if base else SamplingConfig()
    setup_torch(args.threads, "cpu", base.run.kernels if base else "native")
    held_out = HeldOut(seed, env_id, args.episodes, args.micro_batch, args.greedy)
    results = []
    for name, d in zip(args.policies, dirs):
        policy = load_policy(d)
        pool = RolloutPool(WorkerSpec(policy.model.config, policy.tokenizer, env_kwargs, sampling, args.threads,
                                      backend=base.rollout.backend if base else "hf",
                                      lora=lora_config_of(policy.model) if is_lora(policy.model) else None),
                           RolloutConfig(executor="inline", workers=1))
        try:
            res, trajs = evaluate(pool, policy.model, name, held_out)
            results.append(res)
        finally:
            pool.close()
        warning = error_warning(name, trajs)
        if warning:
            warn(warning)
    emit(f"env {env_id}  episodes {args.episodes}  seed {seed}  {'greedy' if args.greedy else 'sampled'}")
    emit(format_table(results))
    payload = {"policies": [r.to_dict() for r in results], "env": env_id, "episodes": args.episodes, "seed": seed}
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(payload, indent=1))
    if args.plot_path:
        plot_results(results, Path(args.plot_path))
    return 0


def _env_kwargs(args: argparse.Namespace, base: Any, env_id: str) -> dict[str, Any]:
    """--env-kwargs, else the run's env kwargs when the env is the run's, else none."""
    try:
        if args.env_kwargs:
            return json.loads(args.env_kwargs)
    except json.JSONDecodeError as e:
        raise SteprlError(f"--env-kwargs is not valid JSON: {e}") from None
    return dict(base.env.kwargs) if base and same_env(base.env.id, env_id) else {}


def same_env(a: str, b: str) -> bool:
    """Whether two ids name one env (`revmod:Reverse-v0` and `Reverse-v0` do: the prefix only imports)."""
    return a.rpartition(":")[2] == b.rpartition(":")[2]


def error_warning(name: str, trajs: list) -> str | None:
    """One warning line when episodes ended in an error, with the commonest one (else None)."""
    from collections import Counter

    errors = Counter(str(t.error).splitlines()[0][:200] for t in trajs if t.error)
    if not errors:
        return None
    (top, k), n = errors.most_common(1)[0], sum(errors.values())
    return f"steprl eval: warning: {n}/{len(trajs)} episodes of {name} ended in an error; commonest ({k}x): {top}"


def plot_results(results: list, path: Path) -> None:
    """Bar chart of success (with 95% CI) and tokens/s per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [Path(r.policy).name or r.policy for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    err = [[r.success - r.success_ci[0] for r in results], [r.success_ci[1] - r.success for r in results]]
    a.bar(names, [r.success for r in results], yerr=err, capsize=4)
    a.set_ylim(0, 1)
    a.set_title("held-out success (95% CI)")
    b.bar(names, [r.tokens_per_s for r in results])
    b.set_title("generated tokens/s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
