"""Rollout workers and the pool that runs them inline or as Ray actors.

`RolloutWorker` is a plain class (a generation backend, a turn format, env instances) tested in-process;
`ray.remote` wraps it at construction. The pool hands out whole micro-batches, gathers them
with `ray.wait`, and sorts results by episode index. A worker that dies is replaced, its
weights re-sent, and its micro-batch played again: micro-batches are pure, so the step's data
is identical to an undisturbed run. A duplicate result is checked against the first (digest).
Inline and Ray retry a failed micro-batch the same way, up to `rollout.max_retries`; a micro-batch
that keeps hitting tool time limits (rollout/faults.py) ends as errored episodes, any other
persistent failure as `RolloutError`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch

from steprl.rollout.backends import make_generator
from steprl.rollout.config import RolloutConfig, SamplingConfig
from steprl.rollout.episode import play_micro_batch
from steprl.rollout.faults import RolloutError, count_failure, timed_out_episodes
from steprl.rollout.plan import spec_micro_batches
from steprl.rollout.trajectory import EpisodeSpec, Trajectory

log = logging.getLogger(__name__)


class RolloutCancelled(RolloutError):
    """A submitted play was abandoned by `RolloutPool.close` (the run is stopping)."""


@dataclass
class WorkerSpec:
    """Everything a worker needs to build itself (picklable: sent to Ray actors)."""

    model_config: Any
    """A transformers PretrainedConfig: the architecture (weights arrive with set_weights)."""
    tokenizer: Any
    """The tokenizer (PreTrainedTokenizerFast)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for gymnasium.make of every spec's env_id."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Token sampling parameters."""
    threads: int = 1
    """torch threads while playing (fixed: results may depend on the thread count)."""
    fast_forward: bool = True
    """Decode with `agents.fast_forward.FastCausalLM` (fused kernels) when the model is a Llama/Qwen2 (`hf`)."""
    backend: str = "hf"
    """Generation backend (`rollout.backend`): a registered name or `module:attr`; built inside the worker."""
    backend_options: dict[str, Any] = field(default_factory=dict)
    """Free-form settings a backend reads from the spec (picklable; the `hf` backend reads none)."""
    device: str = "cpu"
    """Where the backend computes (`cpu` or `cuda`: the run's device when the worker was given a GPU)."""
    dtype: str = "float32"
    """Compute precision of the forward (`rollout.dtype`): float32 or bfloat16; log-probs from float32 logits."""
    lora: Any = None
    """The policy's `LoraConfig` (agents/config.py) when it trains adapters: the worker is sent its base once
    (`RolloutPool.set_base`) and the adapter alone at each version; None: full weights at each version."""


class RolloutWorker:
    """Plays micro-batches of episodes with one policy version at a time, on the spec's generation backend."""

    def __init__(self, spec: WorkerSpec) -> None:
        import steprl.envs  # noqa: F401  (registers steprl/* envs in this process)
        from steprl.agents.chat import make_turn_format

        self.spec = spec
        self.generator = make_generator(spec)
        self.turn_format = make_turn_format(spec.tokenizer)
        self.envs: dict[str, list[Any]] = {}
        self.version: int | None = None

    def set_weights(self, version: int, weights: dict[str, torch.Tensor]) -> int:
        """Load a policy version's weights; returns the version (so callers can wait on it)."""
        self.generator.set_weights(version, weights)
        self.version = version
        return version

    def set_base(self, weights: dict[str, torch.Tensor]) -> None:
        """Load a LoRA policy's frozen base (before its first version); the held version, if any, is kept."""
        self.generator.set_weights(-1 if self.version is None else self.version, weights)

    def _envs(self, env_id: str, n: int) -> list[Any]:
        """n env instances of env_id, created once and reused (each reset by seed per episode)."""
        pool = self.envs.setdefault(env_id, [])
        while len(pool) < n:
            pool.append(gym.make(env_id, **self.spec.env_kwargs))
        return pool[:n]

    def play(self, specs: Sequence[EpisodeSpec], version: int, greedy: bool = False) -> list[Trajectory]:
        """Play one micro-batch with policy `version` (must be the loaded one)."""
        if self.version != version:
            raise RolloutError(f"worker holds policy version {self.version}, asked to play version {version}")
        env_ids = {s.env_id for s in specs}
        if len(env_ids) != 1:
            raise RolloutError(f"a micro-batch must use one env id, got {sorted(env_ids)}")
        envs = self._envs(env_ids.pop(), len(specs))
        prev = torch.get_num_threads()
        torch.set_num_threads(self.spec.threads)
        try:
            return play_micro_batch(self.generator, self.turn_format, envs, specs, self.spec.sampling, version, greedy)
        finally:
            torch.set_num_threads(prev)

    def pid(self) -> int:
        """Process id (fault-injection tests kill it)."""
        return os.getpid()

    def close(self) -> None:
        """Release the generation backend's resources."""
        self.generator.close()


class RolloutPool:
    """Runs micro-batches on inline or Ray workers; results sorted by episode index."""

    def __init__(
        self,
        spec: WorkerSpec,
        cfg: RolloutConfig,
        ray_address: str | None = None,
        ray_num_cpus: int | None = None,
        env_vars: dict[str, str] | None = None,
    ) -> None:
        """Inline: one in-process worker. Ray: `cfg.workers` actors; `env_vars` reach every Ray worker process."""
        self.spec, self.cfg = spec, cfg
        self.version: int | None = None
        self._weights: Any = None
        self._base: Any = None
        """A LoRA policy's frozen base (`set_base`), given to every worker, replacements too."""
        self.restarts = 0
        self._pending: Future | None = None
        self.last_play_s = 0.0
        """Wall seconds of the last `play` (inline: it runs inside `submit`, so waiting on it measures nothing)."""
        self.micro_batches_done = 0
        """Micro-batches returned since the pool was made (never reset): another thread reads a play's progress as
        the difference from its value before the play, without a race against the play's start."""
        self._thread: ThreadPoolExecutor | None = None
        self._cancel = threading.Event()
        self._loading: dict[int, Any] = {}  # worker slot -> readiness ref of a replacement still loading
        if cfg.executor == "inline":
            self.workers: list[Any] = [RolloutWorker(spec)]
            self._ray = None
        else:
            import ray

            from steprl.rollout.ray_setup import init_ray

            init_ray(ray_address, ray_num_cpus, env_vars)
            self._ray = ray
            remote = ray.remote(num_cpus=cfg.num_cpus_per_worker, num_gpus=cfg.num_gpus_per_worker, max_restarts=0)
            self._actor_cls = remote(RolloutWorker)
            self.workers = [self._new_actor() for _ in range(cfg.workers)]

    def _new_actor(self) -> Any:
        """A fresh Ray actor (with the LoRA base and the current weights when there are any)."""
        actor = self._actor_cls.remote(self.spec)
        if self._base is not None:
            actor.set_base.remote(self._base)
        if self._weights is not None:
            actor.set_weights.remote(self.version, self._weights)
        return actor

    def set_base(self, weights: dict[str, torch.Tensor]) -> None:
        """Send a LoRA policy's frozen base to every worker, once: each version then sends the adapter alone."""
        if self._ray is None:
            self._base = weights
            self.workers[0].set_base(weights)
            return
        self._base = self._ray.put(weights)
        refs = [w.set_base.remote(self._base) for w in self.workers]
        for w, ref in enumerate(refs):
            try:
                self._ray.get(ref)
            except self._ray.exceptions.RayActorError:  # died while loading: its replacement is given the base
                self._replace_worker(w)

    def set_weights(self, version: int, weights: dict[str, torch.Tensor]) -> None:
        """Send a policy version to every worker: one ray.put, then a reference to each actor."""
        if self._pending is not None and not self._pending.done():
            raise RolloutError(
                f"set_weights({version}) while a submitted play of version {self.version} is still running"
            )
        self.version = version
        if self._ray is None:
            self._weights = weights
            self.workers[0].set_weights(version, weights)
            return
        self._weights = self._ray.put(weights)
        refs = [w.set_weights.remote(version, self._weights) for w in self.workers]
        for w, ref in enumerate(refs):
            try:
                self._ray.get(ref)
            except self._ray.exceptions.RayActorError:  # died while loading: a fresh actor gets this version
                self._replace_worker(w)
                self._ray.get(self.workers[w].set_weights.remote(version, self._weights))

    def play(
        self, specs: Sequence[EpisodeSpec], micro_batch: int | None = None, greedy: bool = False
    ) -> list[Trajectory]:
        """Play all specs with the current version; returns trajectories sorted by episode index."""
        if self.version is None:
            raise RolloutError("no weights were sent to the pool (call set_weights first)")
        mbs = spec_micro_batches(specs, micro_batch or self.cfg.micro_batch)
        t0 = time.perf_counter()
        if self._ray is None:
            out = [t for k in range(len(mbs)) for t in self._play_inline(mbs, k, greedy)]
        else:
            out = self._play_ray(mbs, greedy)
        self.last_play_s = time.perf_counter() - t0
        return sorted(out, key=lambda t: t.spec.index)

    def submit(self, specs: Sequence[EpisodeSpec], micro_batch: int | None = None) -> Future:
        """Start `play(specs)` with the current version and return its Future (one-step-off pipelining).

        Ray: a driver thread dispatches the micro-batches and waits on the actors, so the caller can
        run the learner meanwhile; the trajectories are exactly those of `play`. Inline: played now
        (one process, one thread count: nothing to overlap), returned as a finished Future.
        """
        if self._pending is not None and not self._pending.done():
            raise RolloutError("submit while an earlier submitted play is still running (take its result first)")
        if self._ray is None:
            fut: Future = Future()
            try:
                fut.set_result(self.play(specs, micro_batch))
            except Exception as e:  # noqa: BLE001  (delivered through the Future, like the Ray path)
                fut.set_exception(e)
            self._pending = fut
            return fut
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="steprl-rollout")
        self._pending = self._thread.submit(self.play, list(specs), micro_batch)
        return self._pending

    def _play_inline(self, mbs: list[list[EpisodeSpec]], k: int, greedy: bool) -> list[Trajectory]:
        """Micro-batch k on the in-process worker, retried like the Ray path (same limit, same outcomes)."""
        out = play_retrying(self.workers[0], mbs, k, self.version, self.cfg.max_retries, greedy)
        self.micro_batches_done += 1
        return out

    def _play_ray(self, mbs: list[list[EpisodeSpec]], greedy: bool) -> list[Trajectory]:
        """Dispatch micro-batches to idle actors, replace dead ones, retry up to max_retries."""
        ray = self._ray
        queue = deque(range(len(mbs)))
        idle = deque(range(len(self.workers)))
        inflight: dict[Any, tuple[int, int]] = {}
        started: dict[Any, float | None] = {}  # None: its actor is still loading, no clock yet
        results: dict[int, list[Trajectory]] = {}
        attempts = [0] * len(mbs)
        limit = self.cfg.micro_batch_timeout_s
        while queue or inflight:
            while queue and idle:
                k, w = queue.popleft(), idle.popleft()
                ref = self.workers[w].play.remote(mbs[k], self.version, greedy)
                inflight[ref] = (w, k)
                started[ref] = None if w in self._loading else time.monotonic()
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            if not ready:
                if self._cancel.is_set():
                    raise RolloutCancelled("the pool was closed while a play was running")
                self._start_clocks(inflight, started)
                for ref in [r for r in inflight if limit > 0 and started[r] is not None
                            and time.monotonic() - started[r] > limit]:
                    w, k = inflight.pop(ref)  # a hung (not dead) worker: kill it, replay its micro-batch elsewhere
                    started.pop(ref)
                    hung = TimeoutError(f"no result after rollout.micro_batch_timeout_s={limit:g} s")
                    self._retry(k, mbs, attempts, hung)
                    ray.kill(self.workers[w])
                    self._replace_worker(w)
                    queue.append(k)
                    idle.append(w)
                continue
            ref = ready[0]
            started.pop(ref, None)
            w, k = inflight.pop(ref)
            try:
                res = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.ObjectLostError) as e:
                self._retry(k, mbs, attempts, e)
                self._replace_worker(w)
                queue.append(k)
                idle.append(w)
                continue
            except ray.exceptions.RayTaskError as e:
                idle.append(w)
                if self._retry(k, mbs, attempts, e):
                    self._deliver(results, k, timed_out_episodes(mbs[k], self.version, attempts[k]))
                else:
                    queue.append(k)
                continue
            idle.append(w)
            if k in results:
                if [t.digest for t in results[k]] != [t.digest for t in res]:
                    raise RolloutError(
                        f"micro-batch {k} returned twice with different trajectories: determinism is broken"
                    )
                continue
            self._deliver(results, k, res)
        return [t for k in sorted(results) for t in results[k]]

    def _deliver(self, results: dict[int, list[Trajectory]], k: int, trajs: list[Trajectory]) -> None:
        """Micro-batch k's final trajectories, counted in `micro_batches_done`."""
        results[k] = trajs
        self.micro_batches_done += 1

    def _replace_worker(self, w: int) -> None:
        """Put a fresh actor (with the current weights) in slot `w` of a dead or killed one.

        Its loading (process start, imports, model, weights) does not count towards the micro-batch timeout:
        slot `w` is marked loading until the actor answers (`_start_clocks`)."""
        self.workers[w] = self._new_actor()
        self._loading[w] = self.workers[w].pid.remote()  # queued behind the constructor and set_weights
        self.restarts += 1

    def _start_clocks(self, inflight: dict[Any, tuple[int, int]], started: dict[Any, float | None]) -> None:
        """Start the timeout clock of micro-batches waiting on an actor that has finished loading."""
        for w, ref in list(self._loading.items()):
            if self._ray.wait([ref], timeout=0)[0]:
                del self._loading[w]
                now = time.monotonic()
                for r, (w2, _k) in inflight.items():
                    if w2 == w and started.get(r) is None:
                        started[r] = now

    def _retry(self, k: int, mbs: list[list[EpisodeSpec]], attempts: list[int], err: BaseException) -> bool:
        """Count a failed attempt of micro-batch k; see `count_failure`."""
        return count_failure(k, mbs, attempts, err, self.cfg.max_retries)

    def pids(self) -> list[int]:
        """Worker process ids (inline: this process)."""
        if self._ray is None:
            return [os.getpid()]
        return self._ray.get([w.pid.remote() for w in self.workers])

    def close(self) -> None:
        """Abandon a submitted play, then close inline workers' backends or kill the actors (which frees theirs).

        The Ray session itself is left running for reuse.
        """
        if self._thread is not None:
            self._cancel.set()
            self._thread.shutdown(wait=True)
            self._thread = None
            self._cancel.clear()
        if self._ray is None:
            for w in self.workers:
                w.close()
        else:
            for w in self.workers:
                self._ray.kill(w)
            self.workers = []


def play_retrying(worker: RolloutWorker, mbs: list[list[EpisodeSpec]], k: int, version: int, max_retries: int,
                  greedy: bool = False) -> list[Trajectory]:
    """Play micro-batch k on an in-process worker, retried on failure like the Ray pool (`count_failure`).

    RolloutError (a wrong version, mixed env ids) and BaseExceptions (Ctrl-C) are not retried.
    """
    attempts = [0] * len(mbs)
    while True:
        try:
            return worker.play(mbs[k], version, greedy)
        except RolloutError:
            raise
        except Exception as e:  # noqa: BLE001  (counted, retried, then reported by count_failure)
            if count_failure(k, mbs, attempts, e, max_retries):
                return timed_out_episodes(mbs[k], version, attempts[k])
