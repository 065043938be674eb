"""Held-out evaluation: play the same 'eval'-stream seeds with a policy and summarise.

Success rate comes with a 95% Wilson interval; reward, turns, tool calls, malformed turns,
generated tokens/s and wall time are reported per policy. The seeds never overlap training
seeds (rollout.plan: eval seeds live in [2**31, 2**32)).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from steprl.rollout.plan import plan_eval
from steprl.rollout.trajectory import EpisodeSpec, Trajectory
from steprl.run.reporting.trackers.base import EvalPoint


@dataclass(frozen=True)
class EvalResult:
    """One policy's held-out numbers."""

    policy: str
    success: float
    success_ci: tuple[float, float]
    reward_mean: float
    turns_mean: float
    tool_calls_mean: float
    malformed_rate: float
    params: int
    tokens_per_s: float
    wall_s: float
    episodes: int

    def point(self, stage: str, step: int) -> EvalPoint:
        """This result as a held-out point on `stage`'s step axis (for evals.jsonl and the trackers)."""
        return EvalPoint(self.policy, stage, step, self.success, self.success_ci[0], self.success_ci[1],
                         self.reward_mean, self.episodes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["success_ci"] = list(self.success_ci)
        return d


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise(name: str, trajs: Sequence[Trajectory], params: int, wall_s: float) -> EvalResult:
    """Aggregate held-out trajectories into an EvalResult."""
    n = len(trajs)
    k = sum(t.success for t in trajs)
    gen = sum(t.num_action_tokens for t in trajs)
    turns = sum(t.num_turns for t in trajs)
    return EvalResult(
        policy=name, success=k / max(n, 1), success_ci=wilson_interval(k, n),
        reward_mean=sum(t.reward for t in trajs) / max(n, 1), turns_mean=turns / max(n, 1),
        tool_calls_mean=sum(t.tool_calls for t in trajs) / max(n, 1),
        malformed_rate=sum(t.malformed_turns for t in trajs) / max(turns, 1),
        params=params, tokens_per_s=gen / max(wall_s, 1e-9), wall_s=wall_s, episodes=n,
    )


@dataclass(frozen=True)
class HeldOut:
    """Which held-out episodes a policy plays: the same 'eval'-stream seeds for every policy of a run."""

    seed: int
    env_id: str
    episodes: int
    micro_batch: int
    greedy: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> HeldOut:
        """The run's held-out episodes (`run.seed`, `env.id`, `eval.*`)."""
        return cls(cfg.run.seed, cfg.env.id, cfg.eval.episodes, cfg.eval.micro_batch, cfg.eval.greedy)

    def specs(self) -> list[EpisodeSpec]:
        """The episodes, seeds in [2**31, 2**32): never a training seed."""
        return plan_eval(self.seed, self.env_id, self.episodes)

    def micro_batch_size(self) -> int:
        """Episodes generated together: `micro_batch` when it divides the episodes, else their gcd.

        A batch's composition can change float results, so every held-out play of a run splits
        the episodes the same way.
        """
        return math.gcd(self.episodes, self.micro_batch)


def evaluate(pool: Any, model: Any, name: str, held_out: HeldOut,
             greedy: bool | None = None) -> tuple[EvalResult, list[Trajectory]]:
    """Send a copy of `model`'s weights to `pool`, play the held-out episodes, summarise.

    The one held-out evaluation: stage summaries, the eval stage's table, distillation's before/after
    and `steprl eval` all come through here. `greedy` overrides `held_out.greedy`.
    """
    from steprl.agents.model import count_parameters

    pool.set_weights(-1, {k: v.detach().clone() for k, v in model.state_dict().items()})
    t0 = time.perf_counter()
    greedy = held_out.greedy if greedy is None else greedy
    trajs = pool.play(held_out.specs(), micro_batch=held_out.micro_batch_size(), greedy=greedy)
    return summarise(name, trajs, count_parameters(model), time.perf_counter() - t0), trajs


def success_fields(res: dict[str, Any]) -> dict[str, Any]:
    """The held-out numbers a stage summary carries."""
    return {"success": res["success"], "success_ci": res["success_ci"], "reward_mean": res["reward_mean"],
            "eval_episodes": res["episodes"], "eval_tokens_per_s": res["tokens_per_s"]}


def format_table(results: Sequence[EvalResult]) -> str:
    """A plain-text table, one row per policy."""
    head = (f"{'policy':<28} {'success':>8} {'95% CI':>13} {'reward':>7} {'turns':>6} {'tools':>6} {'malf':>6} "
            f"{'params':>10} {'tok/s':>8} {'wall_s':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        ci = f"[{r.success_ci[0]:.2f},{r.success_ci[1]:.2f}]"
        lines.append(
            f"{r.policy[-28:]:<28} {r.success:>8.3f} {ci:>13} {r.reward_mean:>7.3f} {r.turns_mean:>6.2f} "
            f"{r.tool_calls_mean:>6.2f} {r.malformed_rate:>6.3f} {r.params:>10,} {r.tokens_per_s:>8.0f} "
            f"{r.wall_s:>7.1f}"
        )
    return "\n".join(lines)
