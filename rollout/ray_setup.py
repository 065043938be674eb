"""Start or join Ray quietly: an embedded local cluster with no dashboard, or `ray.address`."""

from __future__ import annotations

import logging
import os


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """ray.init once per process: join `address`, or start an embedded local Ray with quiet logging."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True, configure_logging=True)
    from steprl.run.kernels import worker_env

    if worker_env():  # run.kernels=portable: workers compute on the same pinned kernel paths
        kwargs["runtime_env"] = {"env_vars": worker_env()}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
