"""One writer per run directory: an OS file lock (`fcntl.flock`) on `<run>/.steprl.lock`.

`train`, `resume` and `distill` hold it for as long as they write; `replay` and `eval` only read and
never take it. The kernel releases a flock when its process ends, however it ends (SIGKILL
included), so a lock can never outlive its holder. The file also records the holder's pid and
command: a second writer is refused with a message naming them, and a file left by a dead
process (a stale lock) is reported once and taken over.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from steprl.errors import SteprlError

log = logging.getLogger(__name__)

LOCK_NAME = ".steprl.lock"


class RunLocked(SteprlError):
    """Another live process writes this run directory; the message names its pid and command."""


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(fd: int) -> dict:
    """The pid/command record in the lock file ({} when empty or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


class RunLock:
    """The exclusive write lock of one run directory; a context manager, released on `release()` or exit."""

    def __init__(self, run_dir: Path, command: str) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLocked naming the holder; a stale record of a dead pid is logged."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(
                f"run directory {self.path.parent} is in use by pid {holder.get('pid', '?')} "
                f"(steprl {holder.get('command', '?')}); wait for it to finish or stop it, then retry"
            ) from None
        old = _read_holder(fd)
        if old.get("pid") and old["pid"] != os.getpid():
            alive = "still running, but it no longer holds the lock" if _pid_alive(int(old["pid"])) else "dead"
            log.warning("%s: stale lock of pid %s (steprl %s, %s) taken over", self.path.parent, old["pid"],
                        old.get("command", "?"), alive)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": self.command}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the record and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()
