"""`learner.world_size` > 1: N Ray actors (full replicas) in one torch.distributed group.

Devices: one actor per rank, `learner.cpus_per_rank` CPUs each (one GPU each on CUDA), placed together
by a placement group. Communicator: rank 0 gives the rendezvous address through Ray, all ranks join
a gloo group (NCCL on CUDA). Channels: the step's trajectories are put in the object store once and
every rank reads them; after the update rank 0's weights come back to the driver, which publishes
them to the rollout pool once per version. A rank that dies fails the step with its rank named; the
run then stops at its last complete checkpoint and `steprl resume` continues (docs/architecture.md#learner).
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import torch

from steprl.agents.lora import is_lora, lora_config_of
from steprl.agents.policy import Policy
from steprl.config import Config
from steprl.errors import SteprlError
from steprl.learners.trainable import trainable_state
from steprl.learners.trainer import copy_weights
from steprl.rollout.ray_setup import init_ray
from steprl.rollout.trajectory import LogitFilter, Trajectory
from steprl.run.learning.learner_rank import LearnerRank, RankSpec
from steprl.run.learning.ranks import rank_threads
from steprl.run.machine.kernels import worker_env

log = logging.getLogger(__name__)

PLACEMENT_TIMEOUT_S = 120
"""How long the ranks' placement group may wait for resources before the run fails with a message."""


class LearnerRankError(SteprlError):
    """A learner rank died or failed during a step."""


class LearnerGroup:
    """The `Learner` protocol over `cfg.learner.world_size` rank actors (see the module docstring)."""

    def __init__(self, cfg: Config, policy: Policy, ref_model: torch.nn.Module | None,
                 logit_filter: LogitFilter) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        init_ray(cfg.ray.address, cfg.ray.num_cpus, worker_env())
        self.ray, self.model, self.world_size = ray, policy.model, cfg.learner.world_size
        self.last_trajectory_bytes = 0
        cuda = cfg.run.device == "cuda"
        bundle = {"CPU": cfg.learner.cpus_per_rank, **({"GPU": 1} if cuda else {})}
        self.pg = placement_group([dict(bundle) for _ in range(self.world_size)], strategy="PACK")
        ready, _ = ray.wait([self.pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            raise LearnerRankError(f"the {self.world_size} learner ranks ({bundle} each) could not be placed within "
                                   f"{PLACEMENT_TIMEOUT_S} s: the cluster lacks the resources (preflight found "
                                   "enough CPUs in all; other jobs or one node too small?); lower "
                                   "learner.cpus_per_rank, rollout.workers or rollout.num_cpus_per_worker")
        weights = {k: v.detach().cpu().clone() for k, v in policy.model.state_dict().items()}
        ref = None if ref_model is None else {k: v.detach().cpu().clone() for k, v in ref_model.state_dict().items()}
        actor = ray.remote(LearnerRank)
        self.ranks = [
            actor.options(num_cpus=cfg.learner.cpus_per_rank, num_gpus=1 if cuda else 0, max_restarts=0,
                          scheduling_strategy=(
                PlacementGroupSchedulingStrategy(placement_group=self.pg, placement_group_bundle_index=r))).remote(
                RankSpec(cfg, policy.model.config, weights, ref, policy.tokenizer.pad_token_id, r, self.world_size,
                         rank_threads(cfg), logit_filter, "nccl" if cuda else "gloo",
                         lora_config_of(policy.model) if is_lora(policy.model) else None,
                         lora_config_of(ref_model) if ref_model is not None and is_lora(ref_model) else None))
            for r in range(self.world_size)
        ]
        addr, port = self._all(lambda a: a.rendezvous.remote(), only=[0])[0]
        self._all(lambda a: a.join.remote(addr, port))
        log.info("learner group: %d ranks, %s at %s:%d", self.world_size, "nccl" if cuda else "gloo", addr, port)

    def _all(self, call: Any, only: list[int] | None = None) -> list[Any]:
        """Call every rank (or `only`) and wait for all. The first dead rank fails the call at once, naming it
        (its peers would otherwise wait in a collective); another failure names the lowest failing rank."""
        ids = list(range(self.world_size)) if only is None else only
        refs = {call(self.ranks[r]): i for i, r in enumerate(ids)}
        out: list[Any] = [None] * len(ids)
        errors: dict[int, BaseException] = {}
        pending = list(refs)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            i = refs[ready[0]]
            try:
                out[i] = self.ray.get(ready[0])
            except self.ray.exceptions.RayActorError as e:
                raise self._failed(ids[i], "died", e) from e
            except Exception as e:  # noqa: BLE001 - reported with the rank below
                errors[ids[i]] = e
        if errors:
            r = min(errors)
            raise self._failed(r, "failed", errors[r]) from errors[r]
        return out

    def _failed(self, rank: int, what: str, err: BaseException) -> LearnerRankError:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        return LearnerRankError(f"learner rank {rank} of {self.world_size} {what} during the step ({first}); the run "
                                "stops at its last complete checkpoint: continue it with `steprl resume RUN_DIR`")

    def update(self, trajs: list[Trajectory]) -> dict[str, float]:
        """Every rank updates on the whole step (object store: one put); the driver's model takes rank 0's weights."""
        ref = self.ray.put(trajs)
        self.last_trajectory_bytes = len(pickle.dumps(trajs, protocol=5)) * self.world_size
        metrics = self._all(lambda a: a.update.remote(ref))
        for r, m in enumerate(metrics[1:], start=1):
            if repr(sorted(m.items())) != repr(sorted(metrics[0].items())):  # repr: NaN equals NaN
                raise LearnerRankError(f"learner rank {r} disagrees with rank 0 on the step's metrics (replicas "
                                       f"diverged): {m} != {metrics[0]}")
        copy_weights(self.model, self._all(lambda a: a.weights.remote(), only=[0])[0])
        return metrics[0]

    def weights(self) -> dict[str, torch.Tensor]:
        """What training changes (a LoRA policy's adapter alone), the driver's copy of rank 0's."""
        return {k: v.detach().to("cpu", copy=True) for k, v in trainable_state(self.model).items()}

    def state_dict(self) -> dict:
        """Rank 0's full state: every rank holds a replica, so it resumes at any world size."""
        return self._all(lambda a: a.state_dict.remote(), only=[0])[0]

    def load_state_dict(self, state: dict) -> None:
        """Load `state` on every rank and into the driver's model."""
        ref = self.ray.put(state)
        self._all(lambda a: a.load_state_dict.remote(ref))
        copy_weights(self.model, state["model"])

    def plant_nan(self, step: int, micro_batch: int) -> None:
        """See `Learner.plant_nan` (every rank installs it; only the owner of `micro_batch` fires it)."""
        self._all(lambda a: a.plant_nan.remote(step, micro_batch))

    def call(self, method: str) -> list[Any]:
        """Every rank's answer to a no-argument method (pid, threads: tests and diagnostics)."""
        return self._all(lambda a: getattr(a, method).remote())

    def close(self) -> None:
        """Kill the rank actors and remove their placement group."""
        from ray.util.placement_group import remove_placement_group

        for a in self.ranks:
            self.ray.kill(a)
        self.ranks = []
        remove_placement_group(self.pg)
