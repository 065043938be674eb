"""`steprl train` / `steprl resume`: run the config's stages in order, resumable at any step.

    warmup  SFT on the env's expert demonstrations (cached per config hash), checkpoint step 0
            (without a warm-up stage the initial weights are checkpointed as step 0: every step replays)
    rl      plan -> play on the pool -> learner update -> record -> log -> checkpoint
    distill compress the policy into a smaller student (its own run directory under distill/)
    eval    held-out success of the final policy

Held-out success is measured after each training stage on the same 'eval'-stream seeds and
written to summary.json. Ctrl-C (or SIGTERM, what schedulers and `docker stop` send) finishes the
current step, checkpoints and stops; a second one abandons the step (the run resumes from its newest
complete checkpoint). The run directory's lock (steprl/run/files/lock.py) is held throughout.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

from steprl.agents.device import resolve_device
from steprl.agents.model import count_parameters
from steprl.agents.policy import Policy, build_policy, load_policy
from steprl.config import Config, to_dict, to_yaml
from steprl.run.files.checkpoint import Checkpoint, latest_good
from steprl.run.files.lock import RunLock
from steprl.run.files.run_dir import create_run_dir, read_summary, write_summary
from steprl.run.loop.state import RunState
from steprl.run.machine.memory import peak_rss_gb
from steprl.run.machine.torch_setup import setup_torch
from steprl.run.reporting.metrics import EpisodeSampling, MetricsLogger
from steprl.stages import STAGES

log = logging.getLogger(__name__)


def train(cfg: Config) -> dict[str, Any]:
    """Create the run directory and run every stage; returns summary.json's content.

    `run.device=auto` is resolved here, before config.yaml is written, so the run records its device."""
    cfg.run.device = resolve_device(cfg.run.device, fresh=True)
    setup_torch(cfg.run.threads, cfg.run.device, cfg.run.kernels)
    run_dir = create_run_dir(cfg)
    with RunLock(run_dir, "train"):
        policy = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
        policy.model.to(cfg.run.device)
        run = RunState(cfg, run_dir, policy, open_metrics(cfg, run_dir, policy), read_summary(run_dir))
        run.summary["params"] = count_parameters(policy.model)
        if "warmup" not in cfg.stages:  # warm-up writes step 0 itself; without it the initial weights are step 0
            run.checkpoint(0, "init", {}, {"version": 0})
        return _run_stages(run)


def resume(run_dir: Path, cfg: Config) -> dict[str, Any]:
    """Continue a run from its newest complete checkpoint (or from scratch if it has none), on its recorded device."""
    cfg.run.device = resolve_device(cfg.run.device, fresh=False)
    setup_torch(cfg.run.threads, cfg.run.device, cfg.run.kernels)
    with RunLock(run_dir, "resume"):
        return _resume_locked(run_dir, cfg)


def _resume_locked(run_dir: Path, cfg: Config) -> dict[str, Any]:
    """`resume` once the run directory's lock is held (a changed config, e.g. rl.steps extended, is saved here)."""
    if (run_dir / "config.yaml").read_text() != to_yaml(cfg):
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    ckpt = latest_good(run_dir / "checkpoints")
    if ckpt is None:
        log.warning("%s has no complete checkpoint: starting its stages from the beginning", run_dir)
        policy = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
        policy.model.to(cfg.run.device)
    else:
        policy = load_policy(ckpt.model_dir)
        policy.model.to(cfg.run.device)
        log.info("resuming %s from %s", run_dir.name, ckpt.path.name)
    run = RunState(cfg, run_dir, policy, open_metrics(cfg, run_dir, policy), read_summary(run_dir), resume_from=ckpt)
    return _run_stages(run)


def open_metrics(cfg: Config, run_dir: Path, policy: Policy) -> MetricsLogger:
    """metrics.jsonl plus the trackers of `run.loggers`, each started (or resumed) with the config."""
    from steprl.run.reporting.trackers import open_trackers

    trackers = open_trackers(cfg.run.loggers, run_dir, cfg.run.project, cfg.run.name, to_dict(cfg))
    sampling = EpisodeSampling(cfg.run.log_episodes, cfg.run.seed, policy.turn_format.decode)
    return MetricsLogger(run_dir, trackers, sampling)


def completed_stages(cfg: Config, summary: dict[str, Any], checkpoint: Checkpoint | None) -> set[str]:
    """Stages that need not run again: those recorded complete, up to the first one the checkpoint reopens."""
    order = cfg.stages
    done = set(summary.get("completed", []))
    stage = None if checkpoint is None else checkpoint.state.get("stage")
    if stage == "warmup":
        done.add("warmup")
    if stage in order:  # a checkpoint of a stage means every stage before it finished, recorded or not
        done |= set(order[: order.index(stage)])
    if "rl" in order and (checkpoint is None or stage in ("warmup", "init", "rl")):
        rl_done = stage == "rl" and checkpoint.step >= cfg.rl.steps
        if not rl_done:  # rl (re)opens: it and every later stage run again
            done -= set(order[order.index("rl"):])
    return done


def _plot_what_was_logged(run: RunState) -> None:
    """Plots of a run that stopped on an error, so its steps so far can be looked at; a failure to draw them is
    a warning, never a replacement for the error that stopped the run."""
    try:
        run.metrics.plot()
    except Exception as e:  # any drawing failure: the run's own error is the one to report
        log.warning("could not draw the plots of %s after the error (%s)", run.dir, e)


def _run_stages(run: RunState) -> dict[str, Any]:
    """Run the stages not yet complete, with Ctrl-C and SIGTERM turned into a clean stop."""
    done = completed_stages(run.cfg, run.summary, run.resume_from)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_sigint(signum: int, frame: Any) -> None:
        if run.stop_requested:
            raise KeyboardInterrupt
        run.stop_requested = True
        what = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        log.warning("%s: finishing the current step, then checkpointing (%s again to abandon it)", what, what)

    for sig in previous:
        signal.signal(sig, on_sigint)
    try:
        for name in run.cfg.stages:
            if name in done:
                continue
            t0 = time.perf_counter()
            result = STAGES[name](run)
            result["wall_s"] = round(time.perf_counter() - t0, 2)
            result["driver_peak_rss_gb"] = peak_rss_gb()  # the peak so far: which stage set it
            run.summary.setdefault("stages", {})[name] = result
            run.summary["completed"] = sorted(done | {name}, key=run.cfg.stages.index)
            done.add(name)
            write_summary(run.dir, run.summary)
            run.metrics.plot_if_due()
        run.summary["wall_s"] = round(time.perf_counter() - run.t_start, 2)
        run.summary["driver_peak_rss_gb"] = peak_rss_gb()
        write_summary(run.dir, run.summary)
        run.metrics.plot()  # the held-out points measured after the last checkpoint included
        return run.summary
    except BaseException:
        _plot_what_was_logged(run)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        run.metrics.close()
        if run.pool is not None:
            run.pool.close()
