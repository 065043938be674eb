"""The `distill` stage: compress the trained teacher into a smaller student with the same tokenizer.

Run it as a stage of `steprl train` (stages: [warmup, rl, distill, eval]; the teacher is the
policy after RL) or on its own with `steprl distill CONFIG distill.teacher=RUN_OR_CHECKPOINT`.
The student lives in its own run directory, `runs/<name>/distill/`, with the usual layout
(config.yaml, checkpoints/, rollouts/, metrics.jsonl, plots/, summary.json) and resumes from
its newest complete checkpoint.

Each step plays the episodes of `rollout.plan.plan_distill(cfg, step)` (a pure function of config, seed and
step, on the 'distill' stream: training-half env seeds, disjoint from eval seeds), then:
  on-policy   the student plays them; exact reverse KL(q || p_T) on the student's tokens
  off-policy  the teacher plays them; forward KL(p_T || q) on the teacher's tokens
  mixed       on-policy when derive(seed, 'mix', step) / 2**64 < mix_fraction
Above `distill.full_vocab_max` tokens, on-policy steps use the sampled advantage
-(log q - log p_T) through the RL learner and off-policy steps cross-entropy on teacher samples.
Before and after, the student plays the run's held-out eval seeds: greedy success (paired with
the teacher's on the same seeds) and the reverse KL student->teacher on sampled episodes.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from steprl.agents.chat import make_turn_format
from steprl.agents.config import LoraConfig
from steprl.agents.device import resolve_device
from steprl.agents.lora import base_identity, is_lora, merged_copy
from steprl.agents.model import count_parameters, keep_layers, load_model
from steprl.agents.policy import (
    BaseSource,
    Policy,
    base_path,
    build_model_for,
    load_policy,
    save_policy,
    with_lora,
)
from steprl.agents.tokenizer import load_tokenizer
from steprl.config import Config, to_dict, to_yaml
from steprl.errors import SteprlError
from steprl.learners.config import DistillLearnerConfig
from steprl.learners.kl import check_same_tokenizer, reverse_kl_on, vocab_size_of
from steprl.learners.trainer import DistillMethod, DistillMode, DistillRouteError, Trainer, distill_trainer
from steprl.rollout.plan import plan_distill
from steprl.rollout.seeding import derive
from steprl.rollout.trajectory import Trajectory
from steprl.rollout.workers import RolloutPool
from steprl.run.files.checkpoint import Checkpoint, latest_good, prune, resolve_policy_dir, save_checkpoint
from steprl.run.files.lock import RunLock
from steprl.run.files.run_dir import run_path, write_summary
from steprl.run.learning.trainers import sampling_filter
from steprl.run.learning.weights import weights_copy, weights_fingerprint
from steprl.run.loop.evaluate import HeldOut, evaluate, success_fields
from steprl.run.loop.loop import Loop, run_steps
from steprl.run.loop.pools import LazyPool
from steprl.run.loop.sft import warm_up
from steprl.run.loop.state import RunState
from steprl.run.machine.torch_setup import setup_torch
from steprl.run.reporting.metrics import MetricsLogger, skip_fields

log = logging.getLogger(__name__)


def picks_on_policy(cfg: Config, step: int) -> bool:
    """Whether step `step` samples from the student: by method, or derive(seed, 'mix', step) for `mixed`."""
    method = cfg.distill.method
    if method == "mixed":
        return derive(cfg.run.seed, "mix", step) / 2**64 < cfg.distill.mix_fraction
    return method == "on_policy"


def learner_config(cfg: Config) -> DistillLearnerConfig:
    """The Distiller's settings: lr, KL weight and temperature from `distill`, guards from `learner`."""
    learner_cfg = cfg.learner
    return DistillLearnerConfig(
        lr=cfg.distill.lr,
        kl_coef=cfg.distill.kl_coef,
        temperature=cfg.distill.temperature,
        weight_decay=learner_cfg.weight_decay,
        betas=tuple(learner_cfg.betas),
        micro_batch=learner_cfg.micro_batch,
        grad_clip=learner_cfg.grad_clip,
        spike_window=learner_cfg.spike_window,
        spike_factor=learner_cfg.spike_factor,
        spike_min_history=learner_cfg.spike_min_history,
        spike_floor=learner_cfg.spike_floor,
        max_consecutive_skips=learner_cfg.max_consecutive_skips,
        max_rollbacks=learner_cfg.max_rollbacks,
        rollback_lr_factor=learner_cfg.rollback_lr_factor,
        rollback_steps=learner_cfg.rollback_steps,
    )


def make_trainer(
    cfg: Config, student: Policy, teacher: Policy
) -> tuple[Trainer, DistillMode | None, DistillMode | None]:
    """(trainer, on-policy mode, off-policy mode): exact KLs when the vocabulary is small, else sampled / ce.

    The sampled route learns through the RL objective, built as the RL stage builds it: the student's sampling
    filter re-applied to the learner's log-probs (TIS weight 1 at identical weights) and the episode length as
    the Dr.GRPO normaliser."""
    try:
        return distill_trainer(student.model, teacher.model, learner_config(cfg), pad_id=student.tokenizer.pad_token_id,
                               total_steps=cfg.distill.steps, method=DistillMethod(cfg.distill.method),
                               full_vocab_max=cfg.distill.full_vocab_max, sampled_cfg=cfg.learner,
                               sample_temperature=cfg.rollout.sampling.temperature,
                               logit_filter=sampling_filter(cfg, student),
                               max_episode_tokens=cfg.rollout.sampling.max_episode_tokens)
    except DistillRouteError as e:
        raise SteprlError(str(e)) from None


def build_student(cfg: Config, teacher: Policy) -> Policy:
    """The student from `distill.student` with the teacher's tokenizer; refuses a different tokenizer (SteprlError)."""
    tok = teacher.tokenizer
    if cfg.tokenizer.path is not None:
        _same_tokenizer(tok, load_tokenizer(cfg.tokenizer.path), f"tokenizer.path {cfg.tokenizer.path}")
    scfg = cfg.distill.student
    source = None  # where a LoRA student's base comes from (None: cut from the teacher, saved beside its adapter)
    layers = student_layers(cfg, teacher.model)
    if layers is not None:  # a LoRA teacher's layers are cut with its adapter merged
        model = keep_layers(merged_copy(teacher.model) if is_lora(teacher.model) else teacher.model, layers)
    elif scfg.path is not None:
        model = load_model(scfg.path)
        if any((Path(scfg.path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            _same_tokenizer(tok, load_tokenizer(scfg.path), f"distill.student.path {scfg.path}")
        source = BaseSource(base_identity(model), path=base_path(scfg.path))
    else:
        seed = derive(cfg.run.seed, "init", 1)
        model = build_model_for(scfg, tok, seed)
        source = BaseSource(base_identity(model), build=asdict(replace(scfg, lora=LoraConfig())), seed=seed)
    model.to(next(teacher.model.parameters()).device)  # the student computes where the teacher does (run.device)
    if vocab_size_of(model) != vocab_size_of(teacher.model):
        raise SteprlError(f"distill: the student emits {vocab_size_of(model)} logits "
                          f"but the teacher {vocab_size_of(teacher.model)}")
    student = Policy(model, tok, make_turn_format(tok))
    if not scfg.lora.enabled:
        return student
    return with_lora(student, scfg.lora, derive(cfg.run.seed, "lora", 1), source)


def student_layers(cfg: Config, teacher: torch.nn.Module) -> list[int] | None:
    """The teacher's layers a cut student keeps (`distill.student_layers`, or every k-th), None when it is not cut;
    SteprlError naming the field when an index is beyond the teacher's layers."""
    n = int(teacher.config.num_hidden_layers)
    if cfg.distill.student_layers is not None:
        layers = [int(i) for i in cfg.distill.student_layers]
        if layers[-1] >= n:
            raise SteprlError(f"distill.student_layers: the teacher has {n} decoder layers (indices 0-{n - 1}), "
                              f"got index {layers[-1]}")
        return layers
    return list(range(0, n, cfg.distill.student_from_teacher)) if cfg.distill.student_from_teacher else None


def student_section(cfg: Config, teacher_fingerprint: str) -> dict[str, Any]:
    """What the student starts as, for the warm-up cache key: `distill.student`, or (student_from_teacher) which
    layers of which exact teacher weights it copies; the teacher's warm-up key alone would not tell RL apart."""
    if cfg.distill.student_from_teacher or cfg.distill.student_layers is not None:
        cut = ({"from_teacher_layers": [int(i) for i in cfg.distill.student_layers]}
               if cfg.distill.student_layers is not None else {"from_teacher_every": cfg.distill.student_from_teacher})
        return {**cut, "teacher": teacher_fingerprint,
                **({"lora": to_dict(cfg)["distill"]["student"]["lora"]} if cfg.distill.student.lora.enabled else {})}
    return to_dict(cfg)["distill"]["student"]


def _same_tokenizer(teacher_tok: Any, other: Any, what: str) -> None:
    """check_same_tokenizer, as a one-line SteprlError naming `what`."""
    try:
        check_same_tokenizer(teacher_tok, other)
    except ValueError as e:
        raise SteprlError(f"distill: {what}: {e}") from None


def student_held_out(cfg: Config, pool: RolloutPool, student: torch.nn.Module, name: str,
                     teacher: torch.nn.Module, pad_id: int, metrics: MetricsLogger, step: int) -> dict[str, Any]:
    """The student's held-out success fields and its reverse KL to the teacher; logged as distill step `step`.

    The KL is measured on episodes the student *samples* on the first `distill.kl_episodes` of the same eval seeds
    (the expectation is under q); a mean over ~50 episodes' tokens needs no 200 more episodes of generation.
    """
    held_out = HeldOut.from_config(cfg)
    res, trajs = evaluate(pool, student, name, held_out)
    metrics.log_eval(res.point("distill", step))
    out = success_fields(res.to_dict())
    kl_held = replace(held_out, episodes=min(held_out.episodes, cfg.distill.kl_episodes or held_out.episodes))
    if held_out.greedy or kl_held.episodes < held_out.episodes:
        _, trajs = evaluate(pool, student, name, kl_held, greedy=False)
    out["kl"] = reverse_kl_on(student, teacher, trajs, pad_id=pad_id, temperature=cfg.distill.temperature)
    log.info("held-out %s: success %.3f, reverse KL %.4f", name, res.success, out["kl"])
    return out


class DistillSteps:
    """Each step: the student (on-policy) or the teacher (off-policy) plays `plan_distill`, the trainer learns."""

    def __init__(self, run: RunState, distill_dir: Path, metrics: MetricsLogger, student: Policy, trainer: Any,
                 modes: tuple[str, str], pools: tuple[RolloutPool, RolloutPool], info: dict[str, Any],
                 fingerprint: str) -> None:
        """`modes` = (on-policy mode, off-policy mode); `pools` = (student pool, teacher pool)."""
        self.run, self.distill_dir, self.metrics, self.student, self.trainer = (
            run,
            distill_dir,
            metrics,
            student,
            trainer,
        )
        self.modes, self.pools, self.info, self.fingerprint = modes, pools, info, fingerprint
        self.on = False
        self.last_path: Path | None = None

    def play(self, step: int) -> list[Trajectory]:
        """The student's samples (with its current weights) or the teacher's."""
        self.on = picks_on_policy(self.run.cfg, step)
        if self.on:
            self.pools[0].set_weights(step, self.trainer.weights())
        return (self.pools[0] if self.on else self.pools[1]).play(plan_distill(self.run.cfg, step))

    def update(self, step: int, trajs: list[Trajectory]) -> dict[str, Any]:
        """One distillation update in this step's mode."""
        return self.trainer.update(trajs, self.modes[0] if self.on else self.modes[1])

    def step_fields(self, step: int, trajs: list[Trajectory]) -> dict[str, Any]:
        """Who played (student: its version; teacher: -1) and the mean reward of those episodes."""
        return {"on_policy": float(self.on), "policy_version": step if self.on else -1,
                "reward_mean": sum(t.reward for t in trajs) / max(1, len(trajs))}

    def postfix(self, stats: dict[str, Any]) -> dict[str, str]:
        """KL and who played."""
        return {"kl": f"{stats.get('kl', 0.0):.3f}", "on": str(int(self.on))}

    def save(self, next_step: int) -> None:
        """Student + trainer state, with the held-out 'before' numbers and the teacher's fingerprint."""
        cfg = self.run.cfg
        self.last_path = save_checkpoint(
            self.distill_dir / "checkpoints",
            next_step,
            lambda d: save_policy(self.student, d),
            self.trainer.state_dict(),
            {"stage": "distill", "version": next_step, "held_out": self.info, "teacher_fingerprint": self.fingerprint},
        )
        prune(self.distill_dir / "checkpoints", cfg.rl.keep_last, cfg.rl.keep_every)
        self.metrics.plot_if_due()


def _checkpoint_to_resume(distill_dir: Path, fingerprint: str, metrics: MetricsLogger) -> Checkpoint | None:
    """The newest complete distillation checkpoint made with this teacher; others are moved aside."""
    ckpt = latest_good(distill_dir / "checkpoints")
    if ckpt is not None and ckpt.state.get("teacher_fingerprint") != fingerprint:  # e.g. RL was extended: a new teacher
        stale = distill_dir / f"checkpoints_stale_{ckpt.state.get('teacher_fingerprint', 'unknown')[:12]}"
        log.warning("distill: checkpoints in %s were made with another teacher; moved to %s, starting over",
                    distill_dir, stale.name)
        (distill_dir / "checkpoints").rename(stale)
        metrics.truncate_after(-1, "distill", same_data=False)  # a new teacher: new data, sent to the trackers
        return None
    return ckpt if ckpt is not None and ckpt.state.get("stage") == "distill" else None


def _train_student(run: RunState, distill_dir: Path, metrics: MetricsLogger, student: Policy,
                   student_pool: LazyPool) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Resume or start (student warm-up, 'before' numbers), the step loop, the 'after' numbers.

    The student's pool is built after its warm-up (LazyPool says why). Returns (held-out 'teacher' and
    'before' numbers, 'after' numbers, last checkpoint).
    """
    cfg, teacher = run.cfg, run.policy
    trainer, on_mode, off_mode = make_trainer(cfg, student, teacher)
    pad = student.tokenizer.pad_token_id
    fingerprint = weights_fingerprint(teacher.model)
    ckpt = _checkpoint_to_resume(distill_dir, fingerprint, metrics)
    start, info = 0, {}
    if ckpt is not None:
        trainer.load_state_dict(ckpt.learner_state())
        start, info = ckpt.step, dict(ckpt.state.get("held_out", {}))
        metrics.truncate_after(start - 1, "distill")
        log.info("distill: resuming from %s", ckpt.path)
    if not info and cfg.distill.student_warmup_steps:  # fresh start: the student learns the protocol from demos
        warm_up(run, student, "student_warmup", student_section(cfg, fingerprint), cfg.distill.student_warmup_steps,
                cfg.distill.student_warmup_lr)
    s_pool, t_pool = student_pool.get(), run.get_pool()  # both after the warm-up (a standalone distill starts Ray here)
    if not info:
        info = {"teacher": success_fields(run.held_out("teacher", "distill", 0, metrics).to_dict()),  # once per weights
                "before": student_held_out(cfg, s_pool, student.model, "student-before", teacher.model, pad, metrics,
                                           0)}
    t_pool.set_weights(0, weights_copy(teacher.model))
    steps = DistillSteps(
        run, distill_dir, metrics, student, trainer, (on_mode, off_mode), (s_pool, t_pool), info, fingerprint
    )
    loop = Loop("distill", start, cfg.distill.steps, cfg.distill.checkpoint_every, distill_dir / "rollouts", metrics,
                f"continue with `steprl resume {run.dir}`")
    run_steps(loop, steps, lambda: run.stop_requested)
    after = student_held_out(cfg, s_pool, student.model, "student", teacher.model, pad, metrics, cfg.distill.steps)
    if steps.last_path is None:  # nothing left to train: the newest checkpoint is the result
        ckpt = latest_good(distill_dir / "checkpoints")
        if ckpt is None:
            steps.save(cfg.distill.steps)
        return info, after, steps.last_path if ckpt is None else ckpt.path
    return info, after, steps.last_path


def _result(cfg: Config, distill_dir: Path, info: dict[str, Any], after: dict[str, Any], path: Path, student: Policy,
            teacher: Policy) -> dict[str, Any]:
    """The stage summary: the student's held-out numbers, before/after, retention, sizes."""
    t_succ, s_params, t_params = (
        info["teacher"]["success"],
        count_parameters(student.model),
        count_parameters(teacher.model),
    )
    result = {k: v for k, v in after.items() if k != "kl"}
    result.update(steps=cfg.distill.steps, method=cfg.distill.method, dir=str(distill_dir), final_checkpoint=str(path),
                  kl_before=info["before"]["kl"], kl_after=after["kl"], success_before=info["before"]["success"],
                  teacher_success=t_succ, retention=after["success"] / t_succ if t_succ > 0 else None,
                  student_params=s_params, teacher_params=t_params, param_ratio=s_params / t_params,
                  student_warmup_steps=cfg.distill.student_warmup_steps)
    return result


def run(run: RunState) -> dict[str, Any]:
    """Distil the run's policy (the teacher) into a new student under `<run dir>/distill`; the stage summary."""
    cfg, teacher = run.cfg, run.policy
    distill_dir = Path(run.dir) / "distill"
    distill_dir.mkdir(parents=True, exist_ok=True)
    if not (distill_dir / "config.yaml").is_file():
        (distill_dir / "config.yaml").write_text(to_yaml(cfg))
    student = build_student(cfg, teacher)
    grad_flags = [p.requires_grad for p in teacher.model.parameters()]
    metrics, s_pool = run.metrics.child(distill_dir, student.turn_format.decode), LazyPool(cfg, student)
    try:
        info, after, path = _train_student(run, distill_dir, metrics, student, s_pool)
        metrics.plot()  # with the 'after' point, measured after the last checkpoint
    finally:
        for p, flag in zip(teacher.model.parameters(), grad_flags):
            p.requires_grad_(flag)
        metrics.close()
        s_pool.close()
    result = {**_result(cfg, distill_dir, info, after, path, student, teacher),
              **skip_fields(metrics.path, "distill", cfg.distill.steps)}
    if result["mostly_skipped"]:
        log.warning("distill: the guards skipped %d of %d steps", result["skipped_steps"], cfg.distill.steps)
    write_summary(
        distill_dir, {"stages": {"distill": result}, "final_checkpoint": str(path), "params": result["student_params"]}
    )
    return result


def run_standalone(cfg: Config) -> dict[str, Any]:
    """`steprl distill`: the teacher from `distill.teacher` (checkpoint, run or model dir); output in
    runs/<name>/distill/."""
    if cfg.distill.teacher is None:
        raise SteprlError("distill.teacher is not set: pass distill.teacher=<checkpoint dir or run dir>")
    teacher_dir = resolve_policy_dir(cfg.distill.teacher)
    cfg.run.device = resolve_device(cfg.run.device, fresh=True)  # recorded in the distill run's config.yaml
    setup_torch(cfg.run.threads, cfg.run.device, cfg.run.kernels)
    teacher = load_policy(teacher_dir)
    teacher.model.to(cfg.run.device)
    parent = run_path(cfg)
    parent.mkdir(parents=True, exist_ok=True)
    with RunLock(parent, "distill"):
        state = RunState(cfg, parent, teacher, MetricsLogger(parent), {})
        try:
            result = run(state)
        finally:
            if state.pool is not None:
                state.pool.close()
    result["teacher"] = str(teacher_dir)
    return result
