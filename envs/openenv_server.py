"""A local OpenEnv server for `steprl/OpenEnv-v0 serve=local`: started by the process that needs it, stopped at exit.

`python -m steprl.envs.openenv_server --env module:Environment [--kwargs JSON] [--action module:Class]
[--observation module:Class]` builds OpenEnv's FastAPI app (`create_fastapi_app`) on a free port of 127.0.0.1 and
prints `port N` once it listens. `local_server` starts one such child per (process, environment, kwargs): every
env instance of that process (a micro-batch plays several at once) opens its own WebSocket session on it. Children
die with their parent (`envs/process_resources.py` at exit; the child also exits when its parent's pipe closes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

from steprl.envs.process_resources import SHARED, resource_key

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0
"""How long a local server may take to start (imports of the user's environment included)."""


class LocalServer:
    """A running server child and its URL."""

    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.proc.poll() is None

    def close(self) -> None:
        """Stop the child (terminate, then kill after 5 s)."""
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def local_server(env: str, kwargs: Mapping[str, Any], action: str | None, observation: str | None) -> str:
    """URL of this process's local OpenEnv server for `env` (started on first use, shared by its env instances)."""
    key = resource_key("openenv-server", env, dict(kwargs), action, observation)
    return SHARED.get(key, lambda: LocalServer(*start(env, kwargs, action, observation))).url


def start(env: str, kwargs: Mapping[str, Any], action: str | None, observation: str | None) -> tuple[Any, str]:
    """Start a server child and wait until it listens: (process, URL); RuntimeError with its log if it fails."""
    cmd = [sys.executable, "-m", "steprl.envs.openenv_server", "--env", env, "--kwargs", json.dumps(dict(kwargs))]
    cmd += ["--action", action] if action else []
    cmd += ["--observation", observation] if observation else []
    errlog = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    deadline = time.monotonic() + START_TIMEOUT_S
    line = ""
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        if line.startswith("port "):
            url = f"http://127.0.0.1:{int(line.split()[1])}"
            log.info("OpenEnv server for %s at %s (pid %d)", env, url, proc.pid)
            return proc, url
    proc.kill()
    errlog.seek(0)
    tail = errlog.read().decode(errors="replace")[-1500:]
    raise RuntimeError(f"the local OpenEnv server for {env} did not start: {tail.strip() or 'no output'}")


def server_schema(url: str, timeout_s: float) -> dict[str, Any]:
    """The action schema an OpenEnv server publishes at `/schema`; ValueError naming the URL when unreachable."""
    import httpx

    try:
        resp = httpx.get(url.rstrip("/") + "/schema", timeout=timeout_s)
        resp.raise_for_status()
        return dict(resp.json().get("action", {}))
    except Exception as exc:  # noqa: BLE001 - refused, timed out, not OpenEnv: say which address failed
        raise ValueError(f"no OpenEnv server answers at {url} ({type(exc).__name__}: {exc}); start it, or check "
                         "env.kwargs.url") from None


def _watch_parent() -> None:
    """Exit when the parent closes our stdin (it died or stopped us): no orphaned servers."""
    sys.stdin.read()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """Serve one OpenEnv environment on a free local port (see the module docstring)."""
    import socket

    import uvicorn
    from openenv.core.env_server import create_fastapi_app

    from steprl.envs.openenv_spec import environment_types, load_attr

    p = argparse.ArgumentParser(prog="python -m steprl.envs.openenv_server")
    p.add_argument("--env", required=True)
    p.add_argument("--kwargs", default="{}")
    p.add_argument("--action")
    p.add_argument("--observation")
    a = p.parse_args(argv)
    factory, kwargs = load_attr(a.env, "env"), json.loads(a.kwargs)
    act_cls, obs_cls = environment_types(factory)
    act_cls = load_attr(a.action, "action") if a.action else act_cls
    obs_cls = load_attr(a.observation, "observation") if a.observation else obs_cls
    app = create_fastapi_app(lambda: factory(**kwargs), act_cls, obs_cls, max_concurrent_envs=256)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them: the port is usable once printed
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=_watch_parent, daemon=True).start()
    sys.stdout.write(f"port {sock.getsockname()[1]}\n")  # the one line the parent waits for
    sys.stdout.flush()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
