"""Machine and kernels: what a run's float results depend on below its config, in every process. `kernels` pins
the ATen, MKL and oneDNN code paths and thread variables (`run.kernels`) before torch loads, `torch_setup` applies
the per-process torch settings, `fingerprint` writes and compares `machine.json`, `kernel_fingerprints` hashes single
kernels' outputs for `steprl doctor`, and `memory` gives freed heap back between steps. The first room: it imports
no other, and this package imports nothing, because the CLI imports `kernels` before torch may load."""
