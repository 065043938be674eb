"""Suite-wide: pin the portable kernels before anything imports torch.

`run.kernels` defaults to `auto` (portable on AVX2 CPUs), and a portable run refuses to start in a process
whose torch was loaded unpinned. Tests run pipelines in-process, so the pytest process is pinned as the
`steprl` command pins itself; subprocesses inherit it (tests/run/test_kernels.py strips it where a test
needs the user's shell). Thread counts are left to each run (torch.set_num_threads(run.threads)).
"""

from steprl.run import kernels

if kernels.resolve_kernels("auto") == "portable":
    kernels.pin(2)
