"""The `distill` stage: compress the trained teacher into a smaller student with the same tokenizer.

Run it as a stage of `steprl train` (stages: [warmup, rl, distill, eval]; the teacher is the
policy after RL) or on its own with `steprl distill CONFIG distill.teacher=RUN_OR_CHECKPOINT`.
The student lives in its own run directory, `runs/<name>/distill/`, with the usual layout
(config.yaml, checkpoints/, rollouts/, metrics.jsonl, plots/, summary.json) and resumes from
its newest complete checkpoint.

Each step plays the episodes of `plan_distill(cfg, step)` (a pure function of config, seed and
step, on the 'distill' stream: training-half env seeds, disjoint from eval seeds), then:
  on-policy   the student plays them; exact reverse KL(q || p_T) on the student's tokens
  off-policy  the teacher plays them; forward KL(p_T || q) on the teacher's tokens
  mixed       on-policy when derive(seed, 'mix', step) / 2**64 < mix_fraction (NUMERICS C4)
Above `distill.full_vocab_max` tokens, on-policy steps use the sampled advantage
-(log q - log p_T) through the RL learner and off-policy steps cross-entropy on teacher samples.
Before and after, the student plays the run's held-out eval seeds: greedy success (paired with
the teacher's on the same seeds) and the reverse KL student->teacher on sampled episodes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from steprl.agents.chat import make_turn_format
from steprl.agents.model import build_model, count_parameters, load_model
from steprl.agents.policy import Policy, load_policy, save_policy
from steprl.agents.tokenizer import load_tokenizer
from steprl.checkpoint import latest_good, prune, resolve_policy_dir, save_checkpoint
from steprl.config import Config, to_dict, to_yaml
from steprl.errors import Interrupted, SteprlError
from steprl.evaluate import evaluate_model, success_fields
from steprl.learners.config import DistillLearnerConfig
from steprl.learners.distill import Distiller, check_same_tokenizer, reverse_kl_on, token_advantages, use_full_vocab, vocab_size_of
from steprl.learners.policy_gradient import Learner
from steprl.memory import release_free_memory
from steprl.metrics import MetricsLogger
from steprl.rollout.plan import plan_distill, plan_eval
from steprl.rollout.seeding import derive
from steprl.rollout.store import steps_digest, write_step
from steprl.rollout.workers import RolloutPool, WorkerSpec
from steprl.run_dir import run_path, write_summary

log = logging.getLogger(__name__)


def picks_on_policy(cfg: Config, step: int) -> bool:
    """Whether step `step` samples from the student: by method, or derive(seed, 'mix', step) for `mixed`."""
    method = cfg.distill.method
    if method == "mixed":
        return derive(cfg.run.seed, "mix", step) / 2**64 < cfg.distill.mix_fraction
    return method == "on_policy"


def learner_config(cfg: Config) -> DistillLearnerConfig:
    """The Distiller's settings: lr, KL weight and temperature from `distill`, guards from `learner`."""
    lc = cfg.learner
    return DistillLearnerConfig(
        lr=cfg.distill.lr, kl_coef=cfg.distill.kl_coef, temperature=cfg.distill.temperature, weight_decay=lc.weight_decay,
        betas=tuple(lc.betas), micro_batch=lc.micro_batch, grad_clip=lc.grad_clip, spike_window=lc.spike_window,
        spike_factor=lc.spike_factor, spike_min_history=lc.spike_min_history, spike_floor=lc.spike_floor,
        max_consecutive_skips=lc.max_consecutive_skips, max_rollbacks=lc.max_rollbacks, rollback_lr_factor=lc.rollback_lr_factor)


class SampledTrainer:
    """Large vocabularies: on-policy steps through the RL `Learner` with per-token advantages -(log q - log p_T)."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, cfg: Config, pad_id: int) -> None:
        """A Learner on the student (lr from distill, no KL-to-reference, one epoch)."""
        lcfg = replace(cfg.learner, lr=cfg.distill.lr, kl_coef=0.0, entropy_coef=0.0, epochs=1)
        self.student, self.teacher, self.cfg, self.pad_id = student, teacher, cfg, pad_id
        self.learner = Learner(student, lcfg, temperature=cfg.rollout.sampling.temperature, total_steps=cfg.distill.steps, pad_id=pad_id)

    def update(self, trajs: list, mode: str) -> dict[str, float]:
        """One learner step on student samples (`mode` must be 'sampled')."""
        if mode != "sampled":
            raise SteprlError(f"distill: the sampled trainer only learns on-policy, got {mode!r}")
        adv = token_advantages(self.student, self.teacher, trajs, pad_id=self.pad_id, temperature=self.cfg.distill.temperature,
                               kl_coef=self.cfg.distill.kl_coef)
        return self.learner.update(trajs, token_advantages=adv).to_dict()

    def weights(self) -> dict[str, torch.Tensor]:
        """The student's weights."""
        return self.learner.weights()

    def state_dict(self) -> dict:
        """The learner's state."""
        return self.learner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`."""
        self.learner.load_state_dict(state)


def make_trainer(cfg: Config, student: Policy, teacher: Policy) -> tuple[Any, str, str]:
    """(trainer, on-policy mode, off-policy mode): exact KLs when the vocabulary is small, else sampled / ce."""
    pad = student.tokenizer.pad_token_id
    if use_full_vocab(vocab_size_of(teacher.model), cfg.distill.full_vocab_max):
        return Distiller(student.model, teacher.model, learner_config(cfg), pad_id=pad, total_steps=cfg.distill.steps), "reverse", "forward"
    if cfg.distill.method == "mixed":
        raise SteprlError(f"distill.method=mixed needs a vocabulary of at most distill.full_vocab_max="
                          f"{cfg.distill.full_vocab_max} tokens (this one has {vocab_size_of(teacher.model)}); use on_policy or off_policy")
    if cfg.distill.method == "on_policy":
        return SampledTrainer(student.model, teacher.model, cfg, pad), "sampled", ""
    return Distiller(student.model, teacher.model, learner_config(cfg), pad_id=pad, total_steps=cfg.distill.steps), "", "ce"


def build_student(cfg: Config, teacher: Policy) -> Policy:
    """The student from `distill.student` with the teacher's tokenizer; refuses a different tokenizer (SteprlError)."""
    tok = teacher.tokenizer
    if cfg.tokenizer.path is not None:
        _same_tokenizer(tok, load_tokenizer(cfg.tokenizer.path), f"tokenizer.path {cfg.tokenizer.path}")
    scfg = cfg.distill.student
    if scfg.path is not None:
        model = load_model(scfg.path)
        if any((Path(scfg.path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            _same_tokenizer(tok, load_tokenizer(scfg.path), f"distill.student.path {scfg.path}")
    else:
        model = build_model(scfg, len(tok), derive(cfg.run.seed, "init", 1), tok.pad_token_id,
                            _or(tok.bos_token_id, 1), _or(tok.eos_token_id, 2))
    if vocab_size_of(model) != vocab_size_of(teacher.model):
        raise SteprlError(f"distill: the student emits {vocab_size_of(model)} logits but the teacher {vocab_size_of(teacher.model)}")
    return Policy(model, tok, make_turn_format(tok))


def _same_tokenizer(teacher_tok: Any, other: Any, what: str) -> None:
    """check_same_tokenizer, as a one-line SteprlError naming `what`."""
    try:
        check_same_tokenizer(teacher_tok, other)
    except ValueError as e:
        raise SteprlError(f"distill: {what}: {e}") from None


def _or(x: Any, default: Any) -> Any:
    """x unless None."""
    return default if x is None else x


def student_pool(cfg: Config, student: Policy) -> RolloutPool:
    """A rollout pool for the student's architecture.

    With Ray its actors reserve no CPU: the teacher's pool already holds the configured CPUs, the two
    pools never play at the same time, and reserving more would leave the student's actors pending.
    """
    rcfg = cfg.rollout if cfg.rollout.executor == "inline" else replace(cfg.rollout, num_cpus_per_worker=0.0)
    spec = WorkerSpec(student.model.config, student.tokenizer, dict(cfg.env.kwargs), cfg.rollout.sampling, cfg.rollout.worker_threads,
                      cfg.rollout.fast_forward, backend=cfg.rollout.backend)
    return RolloutPool(spec, rcfg, cfg.ray.address, cfg.ray.num_cpus)


def teacher_fingerprint(model: torch.nn.Module) -> str:
    """blake2b of the teacher's weights (names, shapes, bytes): a distillation resumes only with the same teacher."""
    h = hashlib.blake2b(digest_size=16, person=b"steprl-teacher")
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def held_out(cfg: Config, pool: RolloutPool, model: torch.nn.Module, name: str, teacher: torch.nn.Module | None = None,
             pad_id: int = 0) -> dict[str, Any]:
    """Held-out numbers of `model` on the run's eval seeds: success fields, and with a teacher the reverse KL.

    The KL is measured on episodes the student *samples* on the same eval seeds (the expectation is under q).
    """
    res, trajs = evaluate_model(pool, model, name, cfg)
    out = success_fields(res.to_dict())
    if teacher is not None:
        if cfg.eval.greedy:
            trajs = pool.play(plan_eval(cfg.run.seed, cfg.env.id, cfg.eval.episodes), micro_batch=math.gcd(cfg.eval.episodes, cfg.eval.micro_batch), greedy=False)
        out["kl"] = reverse_kl_on(model, teacher, trajs, pad_id=pad_id, temperature=cfg.distill.temperature)
    log.info("held-out %s: success %.3f%s", name, res.success, f", reverse KL {out['kl']:.4f}" if "kl" in out else "")
    return out


def distill_stage(state: Any) -> dict[str, Any]:
    """Distil `state.policy` (the teacher) into a new student under `state.dir/distill`; returns the stage summary."""
    cfg, teacher = state.cfg, state.policy
    ddir = Path(state.dir) / "distill"
    ddir.mkdir(parents=True, exist_ok=True)
    if not (ddir / "config.yaml").is_file():
        (ddir / "config.yaml").write_text(to_yaml(cfg))
    student = build_student(cfg, teacher)
    grad_flags = [p.requires_grad for p in teacher.model.parameters()]
    metrics, s_pool = MetricsLogger(ddir), None
    try:
        trainer, on_mode, off_mode = make_trainer(cfg, student, teacher)
        pad = student.tokenizer.pad_token_id
        t_pool = state.get_pool()
        ck = latest_good(ddir / "checkpoints")
        start, info, fp = 0, {}, teacher_fingerprint(teacher.model)
        if ck is not None and ck.state.get("teacher_fingerprint") != fp:  # e.g. RL was extended: a new teacher
            stale = ddir / f"checkpoints_stale_{ck.state.get('teacher_fingerprint', 'unknown')[:12]}"
            log.warning("distill: checkpoints in %s were made with another teacher; moved to %s, starting over", ddir, stale.name)
            (ddir / "checkpoints").rename(stale)
            metrics.truncate_after(-1, "distill")
            ck = None
        if ck is not None and ck.state.get("stage") == "distill":
            trainer.load_state_dict(ck.learner_state())
            start, info = ck.step, dict(ck.state.get("held_out", {}))
            metrics.truncate_after(start - 1, "distill")
            log.info("distill: resuming from %s", ck.path)
        s_pool = student_pool(cfg, student)
        from steprl import stages  # the stages import this module; import late
        if not info and cfg.distill.student_warmup_steps:  # fresh start: the student learns the protocol from demos
            stages.warm_up(state, student, "student_warmup", to_dict(cfg)["distill"]["student"], cfg.distill.student_warmup_steps)
        if not info:
            info = {"teacher": success_fields(stages.held_out(state, "teacher")),  # measured once per weights (the rl stage did)
                    "before": held_out(cfg, s_pool, student.model, "student-before", teacher.model, pad)}
        t_pool.set_weights(0, {k: v.detach().clone() for k, v in teacher.model.state_dict().items()})

        def save(step: int) -> Path:
            path = save_checkpoint(ddir / "checkpoints", step, lambda d: save_policy(student, d), trainer.state_dict(),
                                   {"stage": "distill", "version": step, "held_out": info,
                                    "teacher_fingerprint": fp})
            prune(ddir / "checkpoints", cfg.rl.keep_last, cfg.rl.keep_every)
            metrics.plot()
            return path

        path = None
        bar = tqdm(range(start, cfg.distill.steps), initial=start, total=cfg.distill.steps, desc="distill", unit="step", dynamic_ncols=True)
        for step in bar:
            t0 = time.perf_counter()
            on = picks_on_policy(cfg, step)
            if on:
                s_pool.set_weights(step, trainer.weights())
            trajs = (s_pool if on else t_pool).play(plan_distill(cfg, step))      # pure: (config, seed, step, weights)
            t_play = time.perf_counter() - t0
            stats = trainer.update(trajs, on_mode if on else off_mode)
            write_step(ddir / "rollouts", step, trajs)
            if step % 10 == 9:
                release_free_memory()
            dt = time.perf_counter() - t0
            gen = sum(t.num_action_tokens for t in trajs)
            stats.update(on_policy=float(on), step_time_s=dt, play_time_s=t_play, tokens_per_s=gen / dt, generated_tokens=gen,
                         step_digest=steps_digest(trajs), policy_version=step if on else -1,
                         reward_mean=sum(t.reward for t in trajs) / max(1, len(trajs)))
            metrics.log(step, "distill", stats)
            bar.set_postfix(kl=f"{stats.get('kl', 0.0):.3f}", on=int(on), s=f"{dt:.1f}")
            done = step + 1
            if done % cfg.distill.checkpoint_every == 0 or done == cfg.distill.steps or state.stop_requested:
                path = save(done)
            if state.stop_requested and done < cfg.distill.steps:
                raise Interrupted(f"stopped after distillation step {done} of {cfg.distill.steps}; continue with `steprl resume {state.dir}`")
        bar.close()
        after = held_out(cfg, s_pool, student.model, "student", teacher.model, pad)
    finally:
        for p, flag in zip(teacher.model.parameters(), grad_flags):
            p.requires_grad_(flag)
        metrics.close()
        if s_pool is not None:
            s_pool.close()
    if path is None:
        ck = latest_good(ddir / "checkpoints")
        path = ck.path if ck is not None else save(cfg.distill.steps)
    t_succ, s_params, t_params = info["teacher"]["success"], count_parameters(student.model), count_parameters(teacher.model)
    result = {k: v for k, v in after.items() if k != "kl"}
    result.update(steps=cfg.distill.steps, method=cfg.distill.method, dir=str(ddir), final_checkpoint=str(path),
                  kl_before=info["before"]["kl"], kl_after=after["kl"], success_before=info["before"]["success"],
                  teacher_success=t_succ, retention=after["success"] / t_succ if t_succ > 0 else None,
                  student_params=s_params, teacher_params=t_params, param_ratio=s_params / t_params,
                  student_warmup_steps=cfg.distill.student_warmup_steps)
    write_summary(ddir, {"stages": {"distill": result}, "final_checkpoint": str(path), "params": s_params})
    return result


def distill_from_config(cfg: Config) -> dict[str, Any]:
    """Standalone distillation: teacher from `distill.teacher` (checkpoint, run or model dir), output in runs/<name>/distill/."""
    from steprl.pipeline import RunState, setup_torch  # the pipeline imports the stages; import it late

    if cfg.distill.teacher is None:
        raise SteprlError("distill.teacher is not set: pass distill.teacher=<checkpoint dir or run dir>")
    teacher_dir = resolve_policy_dir(cfg.distill.teacher)
    setup_torch(cfg)
    teacher = load_policy(teacher_dir)
    parent = run_path(cfg)
    parent.mkdir(parents=True, exist_ok=True)
    state = RunState(cfg, parent, teacher, MetricsLogger(parent, tensorboard=False), {})
    try:
        result = distill_stage(state)
    finally:
        if state.pool is not None:
            state.pool.close()
    result["teacher"] = str(teacher_dir)
    return result
