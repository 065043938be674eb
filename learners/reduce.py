"""Gradient reduction in one fixed binary tree over micro-batch index, whatever the world size.

A step's micro-batches 0..M-1 are the leaves of a perfect binary tree of width W = the smallest
power of two >= max(M, world_size); leaves >= M are empty and an empty subtree adds nothing (no
float operation at all), so the tree over M leaves is the same at every width. Rank r owns the
contiguous, aligned subtree of leaves [r*W/N, (r+1)*W/N) (`TreePlan.rank_of(k)` is a pure function
of k), sums it bottom-up as its micro-batches finish, and the ranks' subtree sums are combined by
the top of the same tree. The cross-rank step moves bytes with `all_gather` and does the additions
itself, in tree order, on every rank: the backend's all-reduce order never touches the bits. So
world sizes 1, 2, 4 give bitwise-identical gradients (docs/architecture.md#learner).

Per-micro-batch scalars (loss, KL sums, ...) are gathered the same way and returned in index
order, so the caller sums them sequentially exactly as a single process would.

learners/ never imports Ray: the process group is a `Communicator` (one process, or torch.distributed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


def _pow2_at_least(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    w = 1
    while w < n:
        w *= 2
    return w


@dataclass(frozen=True)
class TreePlan:
    """Which rank owns which micro-batch: contiguous aligned subtrees of one perfect binary tree."""

    n_leaves: int
    world_size: int

    @property
    def width(self) -> int:
        """Leaves of the perfect tree (a power of two, a multiple of world_size)."""
        return _pow2_at_least(max(self.n_leaves, self.world_size))

    @property
    def span(self) -> int:
        """Leaves per rank subtree."""
        return self.width // self.world_size

    def rank_of(self, k: int) -> int:
        """The rank that computes micro-batch k."""
        return k // self.span

    def leaves_of(self, rank: int) -> list[int]:
        """Micro-batch indices rank `rank` computes (possibly none)."""
        return list(range(rank * self.span, min((rank + 1) * self.span, self.n_leaves)))


def tree_sum(values: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """Sum of `values` (len a power of two) in the perfect binary tree; None entries are empty subtrees."""
    if len(values) == 1:
        return values[0]
    mid = len(values) // 2
    a, b = tree_sum(values[:mid]), tree_sum(values[mid:])
    if a is None or b is None:
        return b if a is None else a
    return a + b


class _Stack:
    """Streaming bottom-up tree sum of consecutive leaves: O(log M) partial sums held at a time."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, torch.Tensor]] = []  # (first leaf, size, sum), sizes decreasing

    def push(self, k: int, value: torch.Tensor) -> None:
        lo, size = k, 1
        while self.items and self.items[-1][1] == size and self.items[-1][0] % (2 * size) == 0:
            plo, _, prev = self.items.pop()
            value, lo, size = prev + value, plo, 2 * size
        self.items.append((lo, size, value))

    def result(self) -> torch.Tensor | None:
        """The subtree sum: the leftover partial sums sit in nested right siblings, so fold from the right."""
        if not self.items:
            return None
        out = self.items[-1][2]
        for _, _, v in reversed(self.items[:-1]):
            out = v + out
        return out


class Communicator(Protocol):
    """The process group a learner reduces over: this process alone or torch.distributed."""

    rank: int
    world_size: int

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `t` (same shape and dtype), in rank order; moves bytes, adds nothing."""
        ...


class LocalCommunicator:
    """World size 1: nothing to exchange."""

    rank, world_size = 0, 1

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """[t]."""
        return [t]


class TorchDistCommunicator:
    """The default torch.distributed group of this process (gloo on CPU, NCCL on CUDA)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """dist.all_gather into fresh buffers (NCCL moves CUDA tensors only: CPU tensors go through the GPU)."""
        src = t.to("cuda") if self.dist.get_backend() == "nccl" and t.device.type != "cuda" else t
        out = [torch.empty_like(src) for _ in range(self.world_size)]
        self.dist.all_gather(out, src.contiguous())
        return [o.to(t.device) for o in out]


class TreeReducer:
    """Micro-batch gradients and scalars of one step, reduced in the fixed tree (see the module docstring).

    Per step: `begin(M)` -> this rank's leaves; after each leaf's backward `add(k, scalars)`; then
    `gather_scalars()` and `reduce()` (both collective, in that order on every rank). `reduce()` writes
    the tree sum into every parameter's `.grad`. Without `begin` (SFT, distillation) `reduce()` is a no-op.
    `leaf_hook(k, flat_grad)` may replace a leaf's flattened gradient (fault-injection tests).
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], comm: Communicator | None = None) -> None:
        self.params = list(params)
        self.comm: Communicator = comm or LocalCommunicator()
        self.leaf_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None
        self.plan: TreePlan | None = None
        self._stack = _Stack()
        self._scalars: dict[int, list[float]] = {}

    def begin(self, n_leaves: int) -> list[int]:
        """Start a step of `n_leaves` micro-batches; returns the ones this rank computes. Clears the grads."""
        self.plan = TreePlan(n_leaves, self.comm.world_size)
        self._stack, self._scalars = _Stack(), {}
        for p in self.params:
            p.grad = None
        return self.plan.leaves_of(self.comm.rank)

    def _flat(self) -> torch.Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                          for p in self.params])

    def add(self, k: int, scalars: Sequence[float]) -> None:
        """Take leaf k's gradient (then clear the grads for the next leaf) and its scalar statistics."""
        flat = self._flat()
        if self.leaf_hook is not None:
            flat = self.leaf_hook(k, flat)
        self._stack.push(k, flat)
        self._scalars[k] = [float(s) for s in scalars]
        for p in self.params:
            p.grad = None

    def gather_scalars(self, width: int) -> list[list[float]]:
        """Every leaf's `width` scalars, in micro-batch index order (collective)."""
        assert self.plan is not None, "gather_scalars before begin"
        n = self.plan.n_leaves
        mine = torch.zeros(n, width, dtype=torch.float64)
        for k, row in self._scalars.items():
            mine[k] = torch.tensor(row, dtype=torch.float64)
        parts = self.comm.all_gather(mine)
        return [parts[self.plan.rank_of(k)][k].tolist() for k in range(n)]

    def reduce(self) -> None:
        """Write the tree sum of every leaf's gradient into `.grad` (collective); no-op outside a step."""
        if self.plan is None:
            return
        local = self._stack.result()
        if self.comm.world_size > 1:
            numel = sum(p.numel() for p in self.params)
            dev = self.params[0].device if self.params else torch.device("cpu")
            buf = torch.cat([torch.ones(1, device=dev), local]) if local is not None else torch.zeros(numel + 1,
                                                                                                        device=dev)
            parts = self.comm.all_gather(buf)
            local = tree_sum([q[1:] if bool(q[0] > 0) else None for q in parts])
        self.plan = None
        offset = 0
        for p in self.params:
            n = p.numel()
            g = local[offset:offset + n].view_as(p).to(p.dtype) if local is not None else torch.zeros_like(p)
            p.grad = g.clone()
            offset += n
