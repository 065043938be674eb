"""The stages of a run, each `run_<name>(state, checkpoint) -> summary dict`.

The RL loop reads top to bottom: plan -> play -> update -> record -> log -> checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from steprl.agents.policy import load_policy, save_policy
from steprl.checkpoint import Checkpoint
from steprl.config import to_dict
from steprl.demos import demo_batches
from steprl.errors import Interrupted, SteprlError
from steprl.eval_stage import run_eval  # noqa: F401  (the `eval` stage, looked up by name)
from steprl.evaluate import evaluate_model, success_fields
from steprl.learners.policy_gradient import Learner
from steprl.memory import release_free_memory
from steprl.learners.sft import SFTTrainer
from steprl.rollout.plan import plan_step, rollout_version
from steprl.rollout.store import steps_digest, write_step

log = logging.getLogger(__name__)


def warmup_cache_key(state: Any, model_section: dict[str, Any] | None = None, steps: int | None = None) -> str:
    """Hash of everything a warm-up result depends on (model, tokenizer, env, warmup, seed)."""
    c = to_dict(state.cfg)
    # run.threads too: float reductions, hence the exact weights, depend on the thread count
    key = {k: c[k] for k in ("model", "tokenizer", "env", "warmup")} | {"seed": c["run"]["seed"], "threads": c["run"]["threads"], "v": 1}
    if c["run"].get("kernels", "native") != "native":  # other kernels, other weights (native keys unchanged)
        key["kernels"] = c["run"]["kernels"]
    if model_section is not None:  # another model on the same demonstrations (the distillation student)
        key["model"] = model_section
    if steps is not None:
        key["warmup"]["steps"] = steps
    key["warmup"].pop("cache", None)
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=10).hexdigest()


def warm_up(state: Any, policy: Any, stage: str, model_section: dict[str, Any] | None = None,
            steps: int | None = None) -> tuple[list[float], str | None]:
    """SFT of `policy` on the env's expert demonstrations (warmup.* settings, `steps` if given), or reuse a
    cached identical one. Returns (losses, cache directory it came from or None); metrics under `stage`."""
    cfg = state.cfg
    wcfg = cfg.warmup if steps is None else replace(cfg.warmup, steps=steps)
    cache = Path(cfg.run.root) / ".warmup_cache" / warmup_cache_key(state, model_section, steps)
    if cfg.warmup.cache and (cache / "model" / "config.json").is_file():
        log.info("%s: reusing cached result %s", stage, cache)
        policy.model.load_state_dict(load_policy(cache / "model").model.state_dict())
        policy.model.eval()
        return [], str(cache)
    key = (cfg.env.id, json.dumps(to_dict(cfg)["env"], sort_keys=True), cfg.run.seed, cfg.warmup.batch_size,
           cfg.warmup.imperfect_rate, getattr(policy.tokenizer, "name_or_path", ""), len(policy.tokenizer))
    build = demo_batches(cfg.env.id, dict(cfg.env.kwargs), policy.turn_format, cfg.run.seed, cfg.warmup.batch_size,
                         cfg.warmup.imperfect_rate)
    batches = state.demo_memo.wrap(key, build)
    trainer = SFTTrainer(policy.model, wcfg, cfg.run.seed, policy.tokenizer.pad_token_id)
    bar = tqdm(total=wcfg.steps, desc=stage, unit="step", dynamic_ncols=True)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
        if step % 50 == 0 or step == wcfg.steps - 1:
            state.metrics.log(step, stage, {"loss": loss})
            release_free_memory()
        if state.stop_requested:
            raise KeyboardInterrupt

    losses = trainer.run(batches, on_step=on_step)
    bar.close()
    if cfg.warmup.cache:
        tmp = cache.with_name(cache.name + ".tmp")
        save_policy(policy, tmp / "model")
        tmp.rename(cache) if not cache.exists() else None
    policy.model.eval()
    return losses, None


def run_warmup(state: Any, checkpoint: Checkpoint | None) -> dict[str, Any]:
    """SFT on expert demonstrations (or reuse a cached identical warm-up), then checkpoint step 0."""
    losses, cached_from = warm_up(state, state.policy, "warmup")
    state.checkpoint(0, "warmup", {}, {"version": 0})
    result = {"steps": state.cfg.warmup.steps, "final_loss": losses[-1] if losses else None, "cached_from": cached_from}
    result.update(success_fields(held_out(state, "warmup")))
    return result


def make_learner(state: Any) -> Learner:
    """The RL learner on the run's policy, with a frozen reference when KL is on."""
    cfg = state.cfg
    ref = None
    if cfg.learner.kl_coef > 0:
        ref_dir = state.ckpt_dir / "step_000000" / "model"
        ref = load_policy(ref_dir).model if ref_dir.is_dir() else None
    return Learner(state.policy.model, cfg.learner, temperature=cfg.rollout.sampling.temperature,
                   total_steps=cfg.rl.steps, pad_id=state.policy.tokenizer.pad_token_id, ref_model=ref)


def _resume_rl(state: Any, learner: Learner, checkpoint: Checkpoint | None) -> tuple[int, dict[str, torch.Tensor]]:
    """(first step, weights of the version that plays it): from the checkpoint's learner and in-flight state."""
    staleness = state.cfg.rollout.staleness
    if checkpoint is None or checkpoint.state.get("stage") != "rl":
        return 0, learner.weights()
    saved = checkpoint.learner_state()
    learner.load_state_dict(saved)
    start = checkpoint.step
    state.metrics.truncate_after(start - 1, "rl")
    version = rollout_version(start, staleness)
    if version == start:
        return start, learner.weights()
    inflight = saved.get("inflight")
    if not inflight or int(inflight["version"]) != version:
        raise SteprlError(f"{checkpoint.path} holds no weights of policy version {version}, which plays step {start} "
                          f"with rollout.staleness={staleness}; it was written with another staleness (start a new run)")
    return start, inflight["weights"]


def run_rl(state: Any, checkpoint: Checkpoint | None) -> dict[str, Any]:
    """The RL step loop, from the checkpoint's step (0 after warm-up) to rl.steps.

    Step N is played with policy version `rollout_version(N, staleness)`. With staleness 1 the pool
    plays step N+1 (with version N) while the learner updates on step N, and a checkpoint keeps
    version N's weights as the in-flight state, so resume continues exactly.
    """
    cfg = state.cfg
    staleness, total = cfg.rollout.staleness, cfg.rl.steps
    learner = make_learner(state)
    start, weights = _resume_rl(state, learner, checkpoint)
    pool = state.get_pool()
    pool.set_weights(rollout_version(start, staleness), weights)
    pending = pool.submit(plan_step(cfg, start)) if start < total else None
    bar = tqdm(range(start, total), initial=start, total=total, desc="rl", unit="step", dynamic_ncols=True)
    stats: dict[str, Any] = {}
    for step in bar:
        t0 = time.perf_counter()
        trajs = pending.result()                                     # pure: (config, seed, step, weights)
        t_play = time.perf_counter() - t0
        nxt, inflight = step + 1, None
        if staleness == 1:  # version `step` plays step+1: kept for checkpoints (a run may be extended later)
            inflight = {"version": step, "weights": learner.weights()}
            if nxt < total:                                          # ... and played while the learner updates
                pool.set_weights(step, inflight["weights"])
                pending = pool.submit(plan_step(cfg, nxt))
        stats = learner.update(trajs).to_dict()
        if staleness == 0 and nxt < total:                           # version step+1 plays step+1
            pool.set_weights(nxt, learner.weights())
            pending = pool.submit(plan_step(cfg, nxt))
        write_step(state.dir / "rollouts", step, trajs)
        if step % 10 == 9:  # every step cost 18% of the RL stage's time (page faults after each trim)
            release_free_memory()
        step_time = time.perf_counter() - t0
        gen = sum(t.num_action_tokens for t in trajs)
        stats.update(step_time_s=step_time, play_time_s=t_play, tokens_per_s=gen / step_time, generated_tokens=gen,
                     step_digest=steps_digest(trajs), policy_version=trajs[0].policy_version if trajs else step)
        state.metrics.log(step, "rl", stats)
        bar.set_postfix(reward=f"{stats['reward_mean']:.2f}", success=f"{stats['success_rate']:.2f}", s=f"{step_time:.1f}")
        if nxt % cfg.rl.checkpoint_every == 0 or nxt == total or state.stop_requested:
            extra = {} if inflight is None else {"inflight": inflight}
            state.checkpoint(nxt, "rl", {**learner.state_dict(), **extra}, {"version": nxt, "staleness": staleness})
        if state.stop_requested and nxt < total:
            raise Interrupted(f"stopped after step {nxt} of {total}; continue with `steprl resume {state.dir}`")
    bar.close()
    result = {"steps": total, "final_reward_mean": stats.get("reward_mean"), "final_train_success": stats.get("success_rate")}
    result.update(success_fields(held_out(state, "rl")))
    return result


def run_distill(state: Any, checkpoint: Checkpoint | None) -> dict[str, Any]:
    """Distillation stage (see steprl.distill)."""
    from steprl.distill import distill_stage

    return distill_stage(state)


def weights_fingerprint(model: Any) -> str:
    """blake2b of every parameter's bytes: identifies a policy's exact weights."""
    h = hashlib.blake2b(digest_size=16)
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def held_out(state: Any, name: str) -> dict[str, Any]:
    """Greedy held-out success of the current policy on the run's eval seeds (measured once per exact weights)."""
    fp = weights_fingerprint(state.policy.model)
    cache = state.summary.setdefault("_held_out_cache", {})
    if fp in cache:
        log.info("held-out success after %s: %.3f (same weights as already measured)", name, cache[fp]["success"])
        return dict(cache[fp], policy=name)
    pool = state.get_pool()
    res, _ = evaluate_model(pool, state.policy.model, name, state.cfg)
    log.info("held-out success after %s: %.3f (%d episodes)", name, res.success, res.episodes)
    cache.clear()
    cache[fp] = res.to_dict()
    return res.to_dict()
