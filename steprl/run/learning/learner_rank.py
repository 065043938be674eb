"""One data-parallel learner rank: a Ray actor holding a full replica of the policy and its trainer.

Built by `LearnerGroup`. Rank 0 offers the rendezvous address (its node's IP and a free port); every
rank then joins the torch.distributed group (gloo on CPU, NCCL on CUDA) and builds its `Trainer`
with a `TorchDistCommunicator`, so the gradient reduction of `GuardedOptimizer.reduce_gradients`
runs over the group in the fixed tree (learners/reduce.py). Every rank receives the whole step's
trajectories (whole-batch advantages and normalisers) and computes only the micro-batches the tree
assigns it. This module is imported inside the actor process; it holds no Ray import itself.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch

from steprl.agents.config import LoraConfig
from steprl.agents.device import resolve_device
from steprl.agents.lora import add_lora
from steprl.config import Config
from steprl.learners.reduce import TorchDistCommunicator
from steprl.rollout.trajectory import LogitFilter, Trajectory
from steprl.run.learning.ranks import HoldsTrainer
from steprl.run.learning.trainers import build_rl_trainer
from steprl.run.machine.torch_setup import setup_torch

GROUP_TIMEOUT_S = 120
"""A collective waiting longer than this on a peer fails (a dead peer usually fails it much sooner)."""


@dataclass
class RankSpec:
    """What a rank needs to build itself (picklable)."""

    cfg: Config
    model_config: Any
    weights: dict[str, torch.Tensor]
    ref_weights: dict[str, torch.Tensor] | None
    pad_id: int
    rank: int
    world_size: int
    threads: int
    logit_filter: LogitFilter
    """The rollout's sampling filter: the rank's log-probs are those of the distribution sampled from."""
    backend: str = "gloo"
    """torch.distributed backend: gloo on CPU, nccl when run.device is cuda (one GPU per rank)."""
    lora: LoraConfig | None = None
    """The policy's adapters (weights then hold its base and adapter); None: full weights."""
    ref_lora: LoraConfig | None = None
    """The KL reference's adapters, likewise."""


def _model(config: Any, weights: dict[str, torch.Tensor], device: str, lora: LoraConfig | None = None
           ) -> torch.nn.Module:
    """A float32 causal LM of `config` holding `weights` on `device` (random init skipped over: global RNG
    untouched); with `lora`, wrapped with those adapters first (`weights` then hold base and adapter)."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if lora is not None:
        model = add_lora(model, lora, seed=0)  # every tensor is replaced by `weights` below
    model.load_state_dict(weights)
    return model.to(device)


class LearnerRank(HoldsTrainer):
    """The actor class (wrapped with ray.remote by `LearnerGroup`)."""

    def __init__(self, spec: RankSpec) -> None:
        device = resolve_device(spec.cfg.run.device, fresh=False)  # resolved by the driver; one GPU per rank on cuda
        setup_torch(spec.threads, device)
        self.spec = spec
        self.model = _model(spec.model_config, spec.weights, device, spec.lora)
        self.ref = (None if spec.ref_weights is None
                    else _model(spec.model_config, spec.ref_weights, device, spec.ref_lora))
        self.trainer = None

    def rendezvous(self) -> tuple[str, int]:
        """(IP of this node, a free TCP port): the group's address, asked of rank 0."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def join(self, addr: str, port: int) -> int:
        """Join the process group and build the trainer; returns the rank."""
        import torch.distributed as dist

        s = self.spec
        dist.init_process_group(s.backend, init_method=f"tcp://{addr}:{port}", rank=s.rank, world_size=s.world_size,
                                timeout=datetime.timedelta(seconds=GROUP_TIMEOUT_S))
        cfg = s.cfg
        self.trainer = build_rl_trainer(cfg, self.model, s.pad_id, self.ref, s.logit_filter, TorchDistCommunicator())
        return s.rank

    def update(self, trajs: list[Trajectory]) -> dict[str, float]:
        """This rank's part of one update (collective: every rank must be called)."""
        return self.trainer.update(trajs)

    def threads(self) -> int:
        """torch threads of this rank (tests check the per-rank setting)."""
        return torch.get_num_threads()

    def pid(self) -> int:
        """Process id (fault tests kill it)."""
        return os.getpid()
