"""Stateless seeding: every random number in steprl is a pure function of explicit coordinates.

`derive(seed, stream, *coords)` names a 64-bit key with blake2b (never Python's built-in hash,
which is salted per process). `gumbel_noise(...)` turns per-sequence sample keys into Gumbel noise
over the vocabulary with a counter-based hash written in torch integer ops, so a token's
noise depends on (sample_key, turn, position, token_id) and on nothing else: not on the
other rows of the batch, not on a global RNG, not on the worker that runs it.
"""

from __future__ import annotations

import hashlib

import torch

PERSON = b"steprl-v1"
MASK64 = (1 << 64) - 1
STREAMS = ("env", "sample", "prompt", "eval", "mix", "dyn", "warmup", "demo", "init", "distill")



def _i64(x: int) -> torch.Tensor:
    """A 64-bit constant as a 0-d int64 tensor (same bits; torch has no uint64 arithmetic)."""
    return torch.tensor(x - (1 << 64) if x >= (1 << 63) else x, dtype=torch.int64)


# splitmix64 constants and per-coordinate salts (read-only tensors).
_GOLDEN = _i64(0x9E3779B97F4A7C15)
_MUL1 = _i64(0xBF58476D1CE4E5B9)
_MUL2 = _i64(0x94D049BB133111EB)
_TOKEN_SALT = _i64(0x632BE59BD9B4E019)
_TURN_SALT = _i64(0x2545F4914F6CDD1D)
_POS_SALT = _i64(0x5851F42D4C957F2D)


def derive(seed: int, stream: str, *coords: int) -> int:
    """Return a 64-bit key for (seed, stream, *coords), identical on every process and machine.

    Encoding: blake2b(digest_size=16, person=b"steprl-v1") over the stream tag, a 0 byte,
    then the seed and each coordinate as little-endian 64-bit (two's complement).
    """
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"derive: stream must be a non-empty string, got {stream!r}")
    h = hashlib.blake2b(digest_size=16, person=PERSON)
    h.update(stream.encode("utf-8"))
    h.update(b"\0")
    for c in (seed, *coords):
        if isinstance(c, bool) or not isinstance(c, int):
            raise TypeError(f"derive: coordinates must be int, got {type(c).__name__} {c!r}")
        h.update((c & MASK64).to_bytes(8, "little"))
    return int.from_bytes(h.digest()[:8], "little")


def to_signed64(x: int) -> int:
    """Map an unsigned 64-bit key into torch's int64 range (same bits)."""
    x &= MASK64
    return x - (1 << 64) if x >= (1 << 63) else x


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on int64 tensors (wrapping arithmetic): a bijective bit mixer."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MUL1
    z = (z ^ _shr(z, 27)) * _MUL2
    return z ^ _shr(z, 31)


def position_keys(sample_keys: torch.Tensor, turn: int | torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Per-row counter keys: mix(mix(mix(key) ^ turn·salt) ^ position·salt), shape [B].

    The position enters the key itself (not a low counter word), so streams at neighbouring
    positions never overlap (docs/numerics.md#seeding).
    """
    k = mix64(sample_keys.to(torch.int64))
    k = mix64(k ^ (torch.as_tensor(turn, dtype=torch.int64) * _TURN_SALT))
    return mix64(k ^ (positions.to(torch.int64) * _POS_SALT))


def bits_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """Uniforms strictly inside (0, 1), float64: u = ((bits >> 12) + 0.5) / 2**52.

    52 bits, not 53: with `((bits >> 11) + 0.5) / 2**53` the top value 2**53 - 0.5 needs 54 significant
    bits and rounds to 2**53, so u = 1.0 exactly, G = -log(-log u) = +inf picks any token (with a filter,
    -inf + inf = NaN). Here the largest u is 1 - 2**-53 and the smallest 2**-53, both exact.
    """
    return (_shr(bits, 12).to(torch.float64) + 0.5) * (1.0 / (1 << 52))


def uniform_from_keys(row_keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """Uniforms in (0, 1), float64, shape [B, vocab]: u = ((bits >> 12) + 0.5) / 2**52 (`bits_to_uniform`)."""
    ids = torch.arange(vocab, dtype=torch.int64)
    bits = mix64(row_keys.to(torch.int64)[:, None] ^ mix64(ids * _TOKEN_SALT)[None, :])
    return bits_to_uniform(bits)


def gumbel_noise(
    sample_keys: torch.Tensor, turn: int | torch.Tensor, positions: torch.Tensor, vocab: int
) -> torch.Tensor:
    """Gumbel(0, 1) noise [B, vocab] in float64, a pure function of each row's (key, turn, position).

    `sample_keys`, `positions` are int64 tensors of shape [B]; `turn` an int or [B] tensor.
    Row b never depends on any other row, so the noise is batch-composition invariant.
    """
    u = uniform_from_keys(position_keys(sample_keys, turn, positions), vocab)
    return -torch.log(-torch.log(u))
