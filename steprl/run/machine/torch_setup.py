"""Per-process torch settings that results depend on."""

from __future__ import annotations

import torch


def setup_torch(threads: int, device: str = "cpu", kernels: str = "native") -> None:
    """Fix the thread count and turn on deterministic algorithms (and, on CUDA, the cuBLAS workspace).

    Float reductions (matmul, softmax sums) split work by thread, so the exact bits of every
    result depend on the thread count: it is part of a run's recipe (`run.threads`), never left
    to the machine. On CUDA, `CUBLAS_WORKSPACE_CONFIG` must be set before CUDA initialises (done
    here, before the model moves); see agents/device.py and docs/architecture.md#determinism.
    With `kernels="portable"` it first checks that this process really runs the pinned kernels (a library
    caller may have imported torch before pinning): a run never records portable while computing natively.
    """
    from steprl.run.machine.kernels import verify

    verify(kernels)
    torch.set_num_threads(threads)
    if device == "cuda":
        from steprl.agents.device import cuda_determinism

        cuda_determinism()
    torch.use_deterministic_algorithms(True)
