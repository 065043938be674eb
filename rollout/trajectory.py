"""The records that cross boundaries: what to play (`EpisodeSpec`), what happened (`Trajectory`), and
under which sampling filter the behaviour log-probs were computed (`LogitFilter`).

Spec and trajectory are frozen dataclasses with a JSON round-trip; a trajectory carries a blake2b
digest of everything that defines it, so replay and the rollout store can prove two records equal.
`LogitFilter` and `filtered_logprobs` live here because both sides need the one definition: the
sampler draws from it and the learner (which may import only this module of rollout/) recomputes
log-probs with it, so at identical weights the truncated-importance weight is exactly 1
(docs/numerics.md#gumbel-max-sampling).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to play: its coordinates (step, index), its GRPO group and the keys it uses.

    Members of one group share `env_seed` (same task) and differ in `sample_key`.
    """

    step: int
    index: int
    group: int
    member: int
    env_id: str
    env_seed: int
    sample_key: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpisodeSpec:
        """Inverse of `to_dict`; raises ValueError naming a missing or mistyped field."""
        return cls(**_typed_fields(cls, d))


@dataclass(frozen=True)
class Trajectory:
    """What happened in one episode, as tokens.

    `action_mask[t]` is 1 where the policy generated token t and 0 on prompt, observation
    and tool-result tokens. `behavior_logprobs[t]` is the sampler's log-prob of token t under
    the tempered, filtered distribution (0.0 where the mask is 0). `digest` is a blake2b hash
    of spec, policy version, tokens, mask, rewards, behaviour log-probs and error (see `compute_digest`).
    """

    spec: EpisodeSpec
    policy_version: int
    tokens: tuple[int, ...]
    action_mask: tuple[int, ...]
    behavior_logprobs: tuple[float, ...]
    reward: float
    turn_rewards: tuple[float, ...]
    num_turns: int
    finished: bool
    truncated: bool
    tool_calls: int
    tool_errors: int
    digest: str = ""
    success: bool = False
    malformed_turns: int = 0
    prompt_len: int = 0
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, **kw: Any) -> Trajectory:
        """Construct a trajectory, normalise sequences to tuples and fill in the digest."""
        for name in ("tokens", "action_mask"):
            kw[name] = tuple(int(x) for x in kw[name])
        kw["behavior_logprobs"] = tuple(float(x) for x in kw["behavior_logprobs"])
        kw["turn_rewards"] = tuple(float(x) for x in kw.get("turn_rewards", ()))
        kw["reward"] = float(kw["reward"])
        kw.pop("digest", None)
        t = cls(**kw)
        if not (len(t.tokens) == len(t.action_mask) == len(t.behavior_logprobs)):
            raise ValueError(
                f"trajectory {t.spec.index}: tokens ({len(t.tokens)}), action_mask ({len(t.action_mask)}) "
                f"and behavior_logprobs ({len(t.behavior_logprobs)}) must have equal lengths"
            )
        return replace(t, digest=compute_digest(t))

    @property
    def num_action_tokens(self) -> int:
        """Number of tokens the policy generated."""
        return sum(self.action_mask)

    def verify(self, version: int | None = None) -> bool:
        """True when the stored digest matches the content under digest rule `version` (default: the current)."""
        return self.digest == compute_digest(self, DIGEST_VERSION if version is None else version)

    def to_dict(self, logprobs: bool = True) -> dict[str, Any]:
        """Plain JSON-ready dict. Without log-probs (for display) it no longer verifies: they are in the digest."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["spec"] = self.spec.to_dict()
        for name in ("tokens", "action_mask", "behavior_logprobs", "turn_rewards"):
            d[name] = list(d[name])
        if not logprobs:
            d.pop("behavior_logprobs")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        """Inverse of `to_dict`. Missing log-probs become zeros; the digest is kept as stored."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object for a trajectory, got {type(d).__name__}")
        d = dict(d)
        if "spec" not in d:
            raise ValueError("trajectory record has no 'spec'")
        d["spec"] = EpisodeSpec.from_dict(d["spec"])
        if "behavior_logprobs" not in d and isinstance(d.get("tokens"), list):
            d["behavior_logprobs"] = [0.0] * len(d["tokens"])
        kw = _typed_fields(cls, d, skip=("spec",))
        kw["spec"] = d["spec"]
        for name in ("tokens", "action_mask", "behavior_logprobs", "turn_rewards"):
            kw[name] = tuple(kw[name])
        return cls(**kw)


DIGEST_VERSION = 2
"""The digest rule of new trajectories. 1: spec, policy version, tokens, mask, rewards, turns and flags;
2 adds the behaviour log-probs (every bit) and the error field, both consumed by the learner, so a retried
micro-batch or a replay whose log-probs drifted no longer passes as identical. Records of rule 1 (rollout
files of format v1) are still verified by rule 1 (rollout/store.py)."""

DIGEST_VERSIONS = (1, 2)


def compute_digest(t: Trajectory, version: int = DIGEST_VERSION) -> str:
    """blake2b-128 hex of the canonical JSON of the trajectory's defining fields under digest rule `version`."""
    if version not in DIGEST_VERSIONS:
        raise ValueError(f"unknown trajectory digest version {version}; known: {list(DIGEST_VERSIONS)}")
    payload = {
        "spec": t.spec.to_dict(),
        "policy_version": t.policy_version,
        "tokens": list(t.tokens),
        "action_mask": list(t.action_mask),
        "reward": _float_repr(t.reward),
        "turn_rewards": [_float_repr(r) for r in t.turn_rewards],
        "num_turns": t.num_turns,
        "finished": t.finished,
        "truncated": t.truncated,
    }
    if version >= 2:
        payload["behavior_logprobs"] = [_float_repr(x) for x in t.behavior_logprobs]
        payload["error"] = t.error
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=16, person=b"steprl-traj").hexdigest()


def digest_version_of(t: Trajectory) -> int | None:
    """The digest rule under which `t`'s stored digest matches its content (newest first); None if none does."""
    for v in sorted(DIGEST_VERSIONS, reverse=True):
        if t.digest == compute_digest(t, v):
            return v
    return None


def _float_repr(x: float) -> str:
    """Exact text of a float (NaN/Inf included) so the digest sees every bit."""
    return float(x).hex() if math.isfinite(x) else repr(float(x))


_TYPES = {"int": int, "str": str, "float": float, "bool": bool}


def _typed_fields(cls: type, d: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Pick `cls`'s fields from `d`, checking presence and basic types; unknown keys are errors."""
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
    out: dict[str, Any] = {}
    for name, f in names.items():
        if name in skip:
            continue
        if name not in d:
            if f.default is not f.default_factory:  # has a default of some kind
                continue
            raise ValueError(f"{cls.__name__}: missing field '{name}'")
        v = d[name]
        want = _TYPES.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if want is not None and (not isinstance(v, want) or (want is int and isinstance(v, bool))):
            raise ValueError(f"{cls.__name__}.{name}: expected {want.__name__}, got {type(v).__name__}")
        if name in ("tokens", "action_mask", "behavior_logprobs", "turn_rewards"):
            if not isinstance(v, (list, tuple)):
                raise ValueError(f"{cls.__name__}.{name}: expected a list, got {type(v).__name__}")
            elem = float if name in ("behavior_logprobs", "turn_rewards") else int
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ValueError(f"{cls.__name__}.{name}: expected a list of numbers")
            v = [elem(x) for x in v]
        out[name] = v
    return out


@dataclass(frozen=True)
class LogitFilter:
    """Every filter between the logits and the sampled token: temperature, top-k, top-p, banned ids.

    The sampler records log-probs of this filtered distribution; the learner must apply the same
    filter, or the TIS weight pi/mu equals the kept probability mass instead of 1 (TRL and prime-rl
    re-apply top-k/top-p in their trainers for the same reason).
    """

    temperature: float = 1.0
    """Divides the logits (> 0)."""
    top_k: int = 0
    """Keep the k most likely ids (ties to the lowest id); 0 disables."""
    top_p: float = 1.0
    """Keep the minimal prefix, sorted by (-p, id), whose probability reaches top_p; 1.0 disables."""
    banned: tuple[int, ...] = ()
    """Ids that are never sampled (pad, bos, a chat template's turn-start token); -inf before top-k/top-p."""

    @property
    def truncates(self) -> bool:
        """True when some ids can get -inf (top-k, top-p or banned ids on)."""
        return bool(self.banned) or self.top_k > 0 or self.top_p < 1.0


def filtered_logprobs(logits: Any, filt: LogitFilter, keep: Any = None) -> Any:
    """Log-probs [..., V] (fp32) of softmax(logits / T) with banned ids removed, then top-k, then top-p.

    Filtered ids get -inf. Which ids are kept is computed without gradient; the kept log-probs carry
    the gradient of the logits. Works on any leading shape ([B, V] in the sampler, [B, T, V] chunks in
    the learner); each row is filtered independently. `keep` (int64 ids, the leading shape): one id per
    row that top-k/top-p never drop (see `filter_logprobs`).
    """
    return filter_logprobs(logits, filt, keep)[0]


def filter_logprobs(logits: Any, filt: LogitFilter, keep: Any = None) -> tuple[Any, Any]:
    """(`filtered_logprobs`, outside): `outside` [...] bool is True where top-k/top-p would have dropped `keep`.

    The learner passes its targets as `keep`: its logits are never the sampler's bits (KV-cache decode vs
    full forward, bf16), so a sampled token near the top-k/top-p edge can fall outside the learner's kept
    set, and its log-prob would be -inf (a NaN loss). Kept, it gets a finite log-prob in the kept set plus
    itself; `outside` counts those disagreements. Where the sets agree the result is unchanged bit for bit.
    Banned ids stay -inf (they are never sampled). `outside` is None when `keep` is None.
    """
    import torch  # local: this module stays importable without torch for JSON tooling

    z = logits.float()
    if filt.temperature != 1.0:
        z = z / filt.temperature
    if filt.banned:
        banned = torch.zeros(z.shape[-1], dtype=torch.bool, device=z.device)  # the logits' device (CUDA learner)
        banned[list(filt.banned)] = True
        z = z.masked_fill(banned, float("-inf"))
    drop = _dropped(z.detach(), filt)
    outside = None
    if keep is not None:
        ids = keep[..., None].to(device=z.device, dtype=torch.int64)
        outside = torch.zeros(ids.shape[:-1], dtype=torch.bool, device=z.device)
        if drop is not None:
            outside = drop.gather(-1, ids)[..., 0]
            drop = drop.scatter(-1, ids, False)
    if drop is not None:
        z = z.masked_fill(drop, float("-inf"))
    return torch.log_softmax(z, dim=-1), outside


def _dropped(z: Any, filt: LogitFilter) -> Any:
    """Bool mask [..., V] of ids removed by top-k/top-p (None when neither is on); ties to the lowest id."""
    import torch

    vocab = z.shape[-1]
    use_k = 0 < filt.top_k < vocab
    use_p = filt.top_p < 1.0
    if not (use_k or use_p):
        return None
    # topk is not specified to break ties by id: a stable sort by (-z, id) is.
    sorted_z, order = torch.sort(z, dim=-1, descending=True, stable=True)
    drop = torch.ones_like(z, dtype=torch.bool)
    if not use_p:
        return drop.scatter_(-1, order[..., : filt.top_k], False)
    keep = torch.ones_like(sorted_z, dtype=torch.bool)
    if use_k:
        keep[..., filt.top_k:] = False
        sorted_z = sorted_z.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(sorted_z, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass strictly before each id
    keep &= before < filt.top_p
    keep[..., 0] = True
    return drop.scatter_(-1, order, ~keep)
