"""Advantage estimators by name: grpo, rloo, drgrpo, reinforce (docs/numerics.md#advantages).

An estimator maps one step's rewards and group ids to one advantage per trajectory, plus
the number of zero-variance groups (all rewards equal, including a group left with one valid
member after filtering), whose advantages are set to exactly 0.0 rather than computed (so never
NaN, never 1 ulp off, and never the unnormalised push A = R of a lone member).
Rewards are handled in float64. Callers pass only valid (finite-reward) trajectories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

ADVANTAGES: dict[str, type[AdvantageEstimator]] = {}


def register_advantage(name: str) -> Callable[[type], type]:
    """Class decorator: make an estimator constructible by `make_advantage(name, cfg)`."""

    def deco(cls: type) -> type:
        if name in ADVANTAGES:
            raise ValueError(f"advantage estimator {name!r} registered twice")
        ADVANTAGES[name] = cls
        return cls

    return deco


def make_advantage(name: str, cfg: Any) -> AdvantageEstimator:
    """Instantiate the estimator registered as `name`."""
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage estimator {name!r}; registered: {sorted(ADVANTAGES)}")
    return ADVANTAGES[name](cfg)


@dataclass(frozen=True)
class AdvantageResult:
    """Per-trajectory advantages (float64, input order) and the zero-variance group ids."""

    advantages: torch.Tensor
    zero_groups: tuple[int, ...]

    @property
    def zero_adv_groups(self) -> int:
        """Number of groups whose rewards were all equal."""
        return len(self.zero_groups)


def _groups(groups: Sequence[int]) -> dict[int, list[int]]:
    """Group id -> positions, in first-seen order of positions."""
    out: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        out.setdefault(int(g), []).append(i)
    return out


class AdvantageEstimator:
    """Base class: group-wise estimators override `group_advantages`; stateless by default."""

    def __init__(self, cfg: Any) -> None:
        """Keep the config (epsilons, decay)."""
        self.cfg = cfg

    def __call__(self, rewards: Sequence[float], groups: Sequence[int]) -> AdvantageResult:
        """Advantages for `rewards` grouped by `groups` (e.g. `spec.group`)."""
        r = torch.tensor([float(x) for x in rewards], dtype=torch.float64)
        adv = torch.zeros_like(r)
        zero: list[int] = []
        for g, pos in sorted(_groups(groups).items()):
            rg = r[pos]
            if bool((rg == rg[0]).all()):  # includes a lone member: no baseline to compare with
                zero.append(g)
                continue
            adv[pos] = self.group_advantages(rg)
        return AdvantageResult(adv, tuple(zero))

    def group_advantages(self, r: torch.Tensor) -> torch.Tensor:
        """Advantages of one non-constant group (float64 [n])."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Estimator state (plain numbers)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`."""


@register_advantage("grpo")
class GRPO(AdvantageEstimator):
    """A = (R - mean_g) / (std_g + eps), unbiased std; a group of one gets 0 (the base class)."""

    def group_advantages(self, r: torch.Tensor) -> torch.Tensor:
        """Group-normalised rewards."""
        return (r - r.mean()) / (r.std() + self.cfg.adv_eps)


@register_advantage("rloo")
class RLOO(AdvantageEstimator):
    """A_i = R_i - mean_{j != i} R_j (leave-one-out baseline); a group of one gets 0 (the base class)."""

    def group_advantages(self, r: torch.Tensor) -> torch.Tensor:
        """Leave-one-out centred rewards."""
        n = r.numel()
        return r - (r.sum() - r) / (n - 1)


@register_advantage("drgrpo")
class DrGRPO(AdvantageEstimator):
    """A = R - mean_g (Dr.GRPO: no std division); a group of one gets 0 (the base class)."""

    def group_advantages(self, r: torch.Tensor) -> torch.Tensor:
        """Group-centred rewards."""
        return r - r.mean()


@register_advantage("reinforce")
class Reinforce(AdvantageEstimator):
    """A = R - b with a running baseline b from earlier batches (groups ignored).

    The first batch uses its own mean as b. After each call b <- d b + (1 - d) mean(R),
    d = cfg.reinforce_decay. `zero_groups` is always empty: no advantage is forced to 0.
    """

    def __init__(self, cfg: Any) -> None:
        """Start with no baseline."""
        super().__init__(cfg)
        self.baseline = 0.0
        self.count = 0

    def __call__(self, rewards: Sequence[float], groups: Sequence[int]) -> AdvantageResult:
        """Baseline-subtracted rewards; updates the running baseline."""
        r = torch.tensor([float(x) for x in rewards], dtype=torch.float64)
        if r.numel() == 0:
            return AdvantageResult(r, ())
        mean = float(r.mean())
        b = self.baseline if self.count > 0 else mean
        d = self.cfg.reinforce_decay
        self.baseline = d * b + (1.0 - d) * mean if self.count > 0 else mean
        self.count += 1
        return AdvantageResult(r - b, ())

    def state_dict(self) -> dict:
        """The baseline and the number of batches seen."""
        return {"baseline": float(self.baseline), "count": int(self.count)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the baseline."""
        self.baseline = float(state["baseline"])
        self.count = int(state["count"])
