"""The run directory: create it (never over an existing one), reopen it, and write its summary.

    runs/<name>/config.yaml  checkpoints/  rollouts/  metrics.jsonl  plots/  summary.json  distill/
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import yaml

from steprl.config import Config, from_dict, to_yaml
from steprl.errors import SteprlError


def run_path(cfg: Config) -> Path:
    """<run.root>/<run.name>, checked to stay inside run.root (no '..', no symlink escape)."""
    root = Path(cfg.run.root).resolve()
    path = (root / cfg.run.name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise SteprlError(f"run.name {cfg.run.name!r} would leave run.root {str(root)!r}")
    return path


def create_run_dir(cfg: Config) -> Path:
    """Make a new run directory and save the resolved config; refuses one that exists."""
    path = run_path(cfg)
    if path.is_symlink():
        raise SteprlError(f"{path} is a symlink; refusing to write through it")
    if path.exists():
        raise SteprlError(
            f"run directory {path} already exists: continue it with `steprl resume {path}` "
            f"or start a new one with run.name=<new name>"
        )
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(to_yaml(cfg))
    (path / "environment.json").write_text(json.dumps(environment_record(cfg), indent=1, sort_keys=True))
    from steprl.run.machine.fingerprint import write as write_fingerprint

    write_fingerprint(path, cfg.run.kernels, cfg.run.threads)
    return path


def open_run_dir(path: str | Path) -> tuple[Path, Config]:
    """An existing run directory and its saved config."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise SteprlError(f"{path}: not a steprl run directory (no config.yaml); expected runs/<name>")
    try:
        data = yaml.safe_load((path / "config.yaml").read_text())
    except yaml.YAMLError as e:
        raise SteprlError(f"{path / 'config.yaml'}: not valid YAML ({str(e).splitlines()[0]})") from None
    return path.resolve(), from_dict(data, str(path / "config.yaml"))


def environment_record(cfg: Config) -> dict[str, Any]:
    """Versions, thread count and CPU flags: what results may depend on (docs/architecture.md#determinism)."""
    import numpy
    import torch
    import transformers

    flags = ""
    try:
        flags = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
    except OSError:
        pass
    return {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "numpy": numpy.__version__, "threads": cfg.run.threads, "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "cpu_flags": flags,
    }


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Atomically write summary.json."""
    tmp = path / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True))
    os.replace(tmp, path / "summary.json")


def read_summary(path: Path) -> dict[str, Any]:
    """summary.json, or an empty skeleton."""
    p = path / "summary.json"
    if p.is_file():
        summary = json.loads(p.read_text())
        summary.pop("_held_out_cache", None)  # written by older versions; the cache now lives in the run's memory
        return summary
    return {"stages": {}, "final_checkpoint": None}
