"""Supervised warm-up of a policy on its env's expert demonstrations, cached by everything it depends on.

The run's policy warms up in the `warmup` stage; the distillation student warms up on exactly the
same demonstrations (another model section, maybe another step count). Both come through `warm_up`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from steprl.agents.policy import Policy, load_policy, save_policy
from steprl.config import to_dict
from steprl.learners.precision import model_device
from steprl.learners.trainer import sft_trainer
from steprl.run.demos import demo_batches
from steprl.run.memory import release_free_memory
from steprl.run.state import RunState

log = logging.getLogger(__name__)

LOG_EVERY = 50
"""Warm-up steps between metrics rows (and heap trims)."""

SFT_ATTENTION = "eager"
"""transformers' attention kernel while a small model warms up on a CPU (`sft_attention`); restored after.

On the quickstart's short padded batches the plain matmul-softmax path beats CPU flash attention forward +
backward: teacher 55.5 -> 52.2 ms a step, student 26.8 -> 24.7 ms (`python bench/sft_buckets.py`, portable
kernels, 2 threads, AMD EPYC AVX-512). Rollouts (their own fused forward) and the RL learner are unchanged.
"""

EAGER_MAX_POSITIONS = 1024
"""Eager attention materialises [B, heads, T, T] scores: only for models whose context is at most this long."""


def sft_attention(model: Any) -> str | None:
    """SFT_ATTENTION for a short-context model on a CPU (where it was measured to pay), else None (keep the model's)."""
    on_cpu = model_device(model).type == "cpu"
    short = int(getattr(model.config, "max_position_embeddings", 1 << 30)) <= EAGER_MAX_POSITIONS
    return SFT_ATTENTION if on_cpu and short else None


def warmup_cache_key(run: RunState, model_section: dict[str, Any] | None = None, steps: int | None = None,
                     lr: float | None = None) -> str:
    """Hash of everything a warm-up result depends on (model, tokenizer, env, warmup, seed, threads)."""
    c = to_dict(run.cfg)
    # run.threads too: float reductions, hence the exact weights, depend on the thread count
    key = {k: c[k] for k in ("model", "tokenizer", "env", "warmup")} | {"seed": c["run"]["seed"],
                                                                       "threads": c["run"]["threads"], "v": 2}
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
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=10).hexdigest()


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
    cache = Path(cfg.run.root) / ".warmup_cache" / warmup_cache_key(run, model_section, steps, lr)
    if cfg.warmup.cache and (cache / "model" / "config.json").is_file():
        log.info("%s: reusing cached result %s", stage, cache)
        policy.model.load_state_dict(load_policy(cache / "model").model.state_dict())
        policy.model.eval()
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
    if cfg.warmup.cache:
        tmp = cache.with_name(cache.name + ".tmp")
        save_policy(policy, tmp / "model")
        if not cache.exists():
            tmp.rename(cache)
    policy.model.eval()
    return losses, None
