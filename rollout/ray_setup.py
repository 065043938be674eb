"""Start or join Ray quietly: an embedded local cluster with no dashboard, or `ray.address`."""

from __future__ import annotations

import logging
import os


def init_ray(address: str | None = None, num_cpus: int | None = None, env_vars: dict[str, str] | None = None) -> None:
    """ray.init once per process: join `address`, or start an embedded local Ray with quiet logging.

    `env_vars` go to every Ray worker process (the job's runtime_env): e.g. the pinned kernel settings of
    `run.kernels=portable`, which must be in place before torch initialises in the worker.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True, configure_logging=True)
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": dict(env_vars)}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def local_cpus(num_cpus: int | None) -> float:
    """CPUs an embedded local Ray started by `init_ray(num_cpus=num_cpus)` gets: `num_cpus`, else Ray's own count
    of this machine's CPUs (a container's CPU quota where there is one, else os.cpu_count())."""
    if num_cpus is not None:
        return float(num_cpus)
    try:
        from ray._private.utils import get_num_cpus  # what ray.init(num_cpus=None) uses; private, hence the fallback
    except ImportError:
        return float(os.cpu_count() or 1)
    return float(get_num_cpus())


def cluster_cpus(address: str | None, num_cpus: int | None) -> tuple[float, str]:
    """(CPUs, which cluster) of the Ray a run with `ray.address`/`ray.num_cpus` would use: the session this process
    already runs, the cluster at `address` (joined to ask it, then left: the run joins it again with its workers'
    env), or the embedded local Ray it would start."""
    import sys

    ray = sys.modules.get("ray")  # not imported: not running in this process
    if ray is not None and ray.is_initialized():
        return float(ray.cluster_resources().get("CPU", 0.0)), "the Ray session already running in this process"
    if address:
        import ray

        init_ray(address)
        try:
            return float(ray.cluster_resources().get("CPU", 0.0)), f"the Ray cluster at ray.address={address!r}"
        finally:
            ray.shutdown()
    n = local_cpus(num_cpus)
    if num_cpus is not None:
        return n, f"the embedded local Ray (ray.num_cpus={num_cpus})"
    return n, "the embedded local Ray (this machine's CPUs; ray.num_cpus unset)"


def resolve_ray_address(address: str) -> tuple[str, int]:
    """(host, port) of `ray.address`: `HOST:PORT`, `ray://HOST:PORT` or `auto` (RAY_ADDRESS, else the
    session file `ray start` leaves in Ray's temp dir). Raises ValueError with a one-line reason."""
    given = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address or address == "auto":
            tmp = os.environ.get("RAY_TMPDIR", "/tmp")
            session = os.path.join(tmp, "ray", "ray_current_cluster")
            try:
                address = open(session).read().strip()
            except OSError:
                raise ValueError(f"ray.address='auto': no running Ray cluster (RAY_ADDRESS unset, no {session}); "
                                 "start one with `ray start --head` or leave ray.address unset") from None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"ray.address={given!r}: expected HOST:PORT (e.g. 127.0.0.1:6379), ray://HOST:PORT or auto")
    return host.strip("[]"), int(port)


def ray_address_problem(address: str, timeout_s: float) -> str | None:
    """None when `ray.address` parses and something accepts a connection there within `timeout_s`, else why not.

    Checked before any work: a wrong address otherwise surfaces after warm-up as Ray's endless retries.
    """
    import socket

    try:
        host, port = resolve_ray_address(address)
    except ValueError as e:
        return str(e)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        return (f"ray.address={address!r}: cannot reach a Ray cluster at {host}:{port} within {timeout_s:g} s ({why}); "
                "is `ray start --head` running there?")
    return None
