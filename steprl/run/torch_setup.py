"""Per-process torch settings that results depend on."""

from __future__ import annotations

import torch


def setup_torch(threads: int) -> None:
    """Fix the thread count and turn on deterministic algorithms.

    Float reductions (matmul, softmax sums) split work by thread, so the exact bits of every
    result depend on the thread count: it is part of a run's recipe (`run.threads`), never left
    to the machine. See docs/architecture.md#determinism.
    """
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
