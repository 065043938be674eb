"""Supervised warm-up of a policy on its env's expert demonstrations, cached by everything it depends on.

The run's policy warms up in the `warmup` stage; the distillation student warms up on exactly the
same demonstrations (another model section, maybe another step count). Both come through `warm_up`.

The cache, `<run.root>/.warmup_cache/<key>/`: the key hashes the config sections the result depends on and
the bytes of the files they name (a local model or tokenizer directory, an env's data file), so a file changed
in place is another key. An entry is `model/` plus `manifest.json` (sha256 of every other file), written last;
an entry whose manifest is missing or does not match its files is never loaded (warned about, rebuilt). Each
writer saves into its own temporary directory and renames it into place, so concurrent runs of one key
never mix their files: the first rename wins, the others discard theirs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from steprl.agents.model_source import gguf_path, is_gguf_source
from steprl.agents.policy import Policy, load_policy, save_policy
from steprl.config import to_dict
from steprl.learners.precision import model_device
from steprl.learners.trainer import sft_trainer
from steprl.run.files.checkpoint import sha256_file
from steprl.run.loop.demos import demo_batches
from steprl.run.loop.state import RunState
from steprl.run.machine.memory import release_free_memory

log = logging.getLogger(__name__)

LOG_EVERY = 50
"""Warm-up steps between metrics rows (and heap trims)."""

SFT_ATTENTION = "eager"
"""transformers' attention kernel while a small model warms up on a CPU (`sft_attention`); restored after.

On the quickstart's short padded batches the plain matmul-softmax path beats CPU flash attention forward +
backward: teacher 55.5 -> 52.2 ms a step, student 26.8 -> 24.7 ms (`python bench/sft_buckets.py`, portable
kernels, 2 threads, AMD EPYC AVX-512). Rollouts (their own fused forward) and the RL learner are unchanged.
"""

CACHE_VERSION = 3
"""Part of every cache key. 3: keys hash the contents of the files the config names, entries carry a manifest
(entries of version 2 have none and are never loaded, so they are simply other keys)."""

MANIFEST = "manifest.json"
"""The file of a cache entry listing the sha256 of every other file in it; written last."""

EAGER_MAX_POSITIONS = 1024
"""Eager attention materialises [B, heads, T, T] scores: only for models whose context is at most this long."""


def sft_attention(model: Any) -> str | None:
    """SFT_ATTENTION for a short-context model on a CPU (where it was measured to pay), else None (keep the model's)."""
    on_cpu = model_device(model).type == "cpu"
    short = int(getattr(model.config, "max_position_embeddings", 1 << 30)) <= EAGER_MAX_POSITIONS
    return SFT_ATTENTION if on_cpu and short else None


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every regular file under the directory `root`, by its path relative to `root` ('/'-separated)."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def content_digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes, or of a directory's (relative path, file sha256) list; None if nothing is there."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        return hashlib.sha256(json.dumps(file_digests(p), sort_keys=True).encode()).hexdigest()
    return None


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # not a possible path (a NUL byte, too long): an ordinary string
        return False


def _named_files(key: dict[str, Any]) -> dict[str, str]:
    """Content digests of the files the key's sections name: model.path, tokenizer.path, and any env.kwargs
    string (or string in a list) that names an existing file or directory (e.g. steprl/QA-v0's `path`)."""
    named = {"model.path": key["model"].get("path"), "tokenizer.path": key["tokenizer"].get("path")}
    for name, value in key["env"].get("kwargs", {}).items():
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if isinstance(v, str) and v and _exists(v):
                named[f"env.kwargs.{name}" + (f"[{i}]" if isinstance(value, list) else "")] = v
    out = {}
    for name, path in named.items():
        if is_gguf_source(path):  # a GGUF (or a packaged one): the file's bytes, not the spelling of its name
            path = str(gguf_path(path))
        digest = None if path is None else content_digest(path)
        if digest is not None:
            out[name] = digest
    return out


def warmup_cache_key(run: RunState, model_section: dict[str, Any] | None = None, steps: int | None = None,
                     lr: float | None = None) -> str:
    """Hash of everything a warm-up result depends on (model, tokenizer, env, warmup, seed, threads, and the
    contents of the files those sections name: a path alone would reuse a result after its file changed)."""
    c = to_dict(run.cfg)
    # run.threads too: float reductions, hence the exact weights, depend on the thread count
    key = {k: c[k] for k in ("model", "tokenizer", "env", "warmup")} | {"seed": c["run"]["seed"],
                                                                       "threads": c["run"]["threads"],
                                                                       "v": CACHE_VERSION}
    if c["run"].get("kernels", "native") != "native":  # other kernels, other bits (native keys stay as they were)
        key["kernels"] = c["run"]["kernels"]
    if c["run"].get("device", "cpu") not in ("cpu", "auto"):  # a GPU's arithmetic gives other weights
        key["device"] = c["run"]["device"]
    if model_section is not None:  # another model on the same demonstrations (the distillation student)
        key["model"] = model_section
    if steps is not None:
        key["demo_cycle"] = key["warmup"]["steps"]  # a student cycles through the teacher's warm-up batches
        key["warmup"]["steps"] = steps
    if lr is not None:
        key["warmup"]["lr"] = lr
    key["warmup"].pop("cache", None)
    for name, before in (("grad_clip", 1.0), ("length_buckets", 1)):  # the values before they were settings:
        if key["warmup"].get(name) == before:  # cached warm-ups stay valid
            key["warmup"].pop(name)
    contents = _named_files(key)
    if contents:
        key["contents"] = contents
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=10).hexdigest()


def entry_problem(entry: Path) -> str | None:
    """Why the cache entry `entry` must not be loaded (no manifest, a file missing, added or changed), or None."""
    try:
        listed = json.loads((entry / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {MANIFEST}"
    present = {k: v for k, v in file_digests(entry).items() if k != MANIFEST}
    if not isinstance(listed, dict) or not {"model/config.json", "model/adapter_config.json"} & set(listed):
        return f"{MANIFEST} lists no model"
    for name in sorted(set(listed) | set(present)):
        if name not in present:
            return f"{name} is missing"
        if name not in listed:
            return f"{name} is not in {MANIFEST}"
        if present[name] != listed[name]:
            return f"{name} does not match its sha256 in {MANIFEST}"
    return None


def _write_manifest(entry: Path) -> None:
    """manifest.json of every file under `entry`, written atomically (a reader sees all of it or none)."""
    part = entry / (MANIFEST + ".part")
    part.write_text(json.dumps({"files": file_digests(entry)}, indent=1, sort_keys=True))
    os.replace(part, entry / MANIFEST)


def _store(policy: Policy, entry: Path) -> None:
    """Save `policy` as the cache entry `entry`: into this writer's own temporary directory, manifest last, then
    renamed into place. Another writer's verified entry that got there first is kept (it holds the same
    result); a broken one is moved aside and replaced."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=entry.name + "."))
    try:
        save_policy(policy, tmp / "model")
        _write_manifest(tmp)
        try:
            os.rename(tmp, entry)  # atomic; fails when `entry` exists and is not empty
            return
        except OSError:
            pass
        if entry_problem(entry) is None:  # another writer won
            return
        aside = Path(tempfile.mkdtemp(dir=entry.parent, prefix=entry.name + ".stale."))
        try:
            os.rename(entry, aside / "entry")
        except FileNotFoundError:  # another writer moved it first
            pass
        shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:  # yet another writer published meanwhile
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cached(policy: Policy, entry: Path, stage: str) -> bool:
    """Load the cache entry `entry` into `policy` if it exists and its manifest verifies; warn when it does not."""
    if not entry.exists():
        return False
    problem = entry_problem(entry)
    if problem is None:
        try:
            policy.model.load_state_dict(load_policy(entry / "model").model.state_dict())
        except (OSError, ValueError) as e:  # replaced by another writer between the check and the load
            problem = f"{type(e).__name__}: {e}"
    if problem is not None:
        log.warning("%s: ignoring warm-up cache entry %s (%s); warming up afresh", stage, entry, problem)
        return False
    log.info("%s: reusing cached result %s", stage, entry)
    policy.model.eval()
    return True


def _demonstrations(run: RunState, policy: Policy) -> Any:
    """step -> that step's demonstration batch, memoised in the run (a second warm-up reuses them)."""
    cfg = run.cfg
    key = (cfg.env.id, json.dumps(to_dict(cfg)["env"], sort_keys=True), cfg.run.seed, cfg.warmup.batch_size,
           cfg.warmup.imperfect_rate, getattr(policy.tokenizer, "name_or_path", ""), len(policy.tokenizer))
    build = demo_batches(cfg.env.id, dict(cfg.env.kwargs), policy.turn_format, cfg.run.seed, cfg.warmup.batch_size,
                         cfg.warmup.imperfect_rate)
    return run.demo_memo.wrap(key, build)


def warm_up(run: RunState, policy: Policy, stage: str, model_section: dict[str, Any] | None = None,
            steps: int | None = None, lr: float | None = None) -> tuple[list[float], str | None]:
    """SFT of `policy` on the env's expert demonstrations (warmup.* settings, `steps` and `lr` if given), or
    reuse a cached identical one. Returns (losses, cache directory it came from or None); metrics under `stage`.

    With `steps` given (the distillation student) step k trains on the teacher's warm-up batch k mod
    warmup.steps: the same demonstrations, already built and memoised in a `train` run, so a student warming
    up longer than the teacher repeats them rather than paying for new ones (~10 ms a batch of 32)."""
    cfg = run.cfg
    warmup_cfg = cfg.warmup if steps is None else replace(cfg.warmup, steps=steps)
    warmup_cfg = warmup_cfg if lr is None else replace(warmup_cfg, lr=lr)
    cache = None
    if cfg.warmup.cache:  # the key hashes named files' bytes: only computed when the cache is used
        cache = Path(cfg.run.root) / ".warmup_cache" / warmup_cache_key(run, model_section, steps, lr)
        if _load_cached(policy, cache, stage):
            return [], str(cache)
    trainer = sft_trainer(policy.model, warmup_cfg, cfg.run.seed, policy.tokenizer.pad_token_id)
    bar = tqdm(total=warmup_cfg.steps, desc=stage, unit="step", dynamic_ncols=True)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
        if step % LOG_EVERY == 0 or step == warmup_cfg.steps - 1:
            run.metrics.log(step, stage, {"loss": loss})
            release_free_memory()
        if run.stop_requested:
            raise KeyboardInterrupt

    demos = _demonstrations(run, policy)
    if steps is not None:  # another model (the student): exactly the teacher's batches, cycled past their end
        cycle = cfg.warmup.steps
        demos_of = lambda k: demos(k % cycle)  # noqa: E731
    else:
        demos_of = demos
    attention, during = policy.model.config._attn_implementation, sft_attention(policy.model)
    if during is not None:
        policy.model.set_attn_implementation(during)
    try:
        losses = trainer.run(demos_of, on_step=on_step)
    finally:
        if during is not None:
            policy.model.set_attn_implementation(attention)
    bar.close()
    if cache is not None:
        _store(policy, cache)
    policy.model.eval()
    return losses, None
