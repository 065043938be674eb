"""A question/answer file as items: read (UTF-8 JSON lines or Parquet), checked, de-duplicated and split.

The split is keyed on each item's question text, never on its position: question q is held out iff

    blake2b(digest_size=16, person=b"steprl-v1")(b"qa-split" + b"\\0" + le64(split_seed) + utf8(q))

read as a little-endian 64-bit integer (its first 8 bytes), divided by 2**64, is below `held_out_fraction`. This
is the encoding of `rollout.seeding.derive` (docs/numerics.md#seeding) with the question's bytes as the
coordinate (envs/ imports nothing else of the project, so it is written out here). Adding, removing or moving
other lines never moves an item across the split, and copies of a question are one item: exact copies (same
question, same answer) are dropped with a warning, one question with two answers is an error naming both lines.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steprl.envs.adapters import Items

log = logging.getLogger("steprl.envs.qa_file")

PERSON = b"steprl-v1"
SPLIT_STREAM = b"qa-split"
MASK64 = (1 << 64) - 1
JSON_SPACE = " \t\r"
"""JSON's whitespace within a line (RFC 8259; "\\n" ends the line): not str.strip's Unicode spaces."""


def read_items(path: str | Path, question_field: str, answer_field: str) -> list[tuple[str, Any]]:
    """(question, answer) pairs from a .jsonl/.json-lines or .parquet file, in file order.

    JSON lines are read as UTF-8 (a leading byte-order mark is dropped), never in the locale's encoding,
    and split on "\\n" only: U+2028, U+2029 and U+0085 are legal inside JSON strings. The question must be
    a string and the answer must not be null; anything else is a ValueError naming the file and line.
    """
    return [(q, a) for _, q, a in _parse(Path(path), Path(path).read_bytes(), question_field, answer_field)]


def _parse(path: Path, data: bytes, question_field: str, answer_field: str) -> list[tuple[int, str, Any]]:
    """(line or row number, question, answer) of every item in `data`, the bytes of `path`."""
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        rows = list(enumerate(pq.read_table(pa.BufferReader(data)).to_pylist(), 1))
        where = f"{path}: row "
    else:
        rows, where = _json_lines(path, data), f"{path}:"
    items = []
    for n, row in rows:
        if not isinstance(row, dict) or question_field not in row or answer_field not in row:
            raise ValueError(f"{where}{n}: lacks {question_field!r} or {answer_field!r}")
        question, answer = row[question_field], row[answer_field]
        for name, value in ((question_field, question), (answer_field, answer)):
            if value is None:
                raise ValueError(f"{where}{n}: {name!r} is null; every item needs a question and an answer")
        if not isinstance(question, str):
            raise ValueError(f"{where}{n}: {question_field!r} must be a string, got {type(question).__name__}")
        items.append((n, question, answer))
    return items


def _json_lines(path: Path, data: bytes) -> list[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line of UTF-8 `data`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (byte {data[e.start]:#04x}); save it as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    scan = json.JSONDecoder().scan_once  # the C scanner json.loads ends in, without its per-call overhead
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        line = line.strip(JSON_SPACE)
        if not line:
            continue
        try:
            row, end = scan(line, 0)
        except (StopIteration, json.JSONDecodeError):
            end = -1
        if end != len(line):  # not one JSON value: json.loads says what is wrong
            try:
                json.loads(line)
                raise ValueError(f"{path}:{n}: not one JSON value")
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        out.append((n, row))
    return out


def held_out(split_seed: int, question: str, fraction: float) -> bool:
    """Whether `question` is held out: its seeded blake2b draw (module docstring) is below `fraction`."""
    h = _split_prefix(int(split_seed) & MASK64).copy()
    h.update(question.encode("utf-8", "surrogatepass"))  # JSON may hold a lone surrogate (\\ud800)
    return int.from_bytes(h.digest()[:8], "little") / 2**64 < fraction


@functools.lru_cache(maxsize=16)
def _split_prefix(seed: int) -> Any:
    """The blake2b state after the stream tag and the seed (copied per question: one hash setup per file)."""
    h = hashlib.blake2b(digest_size=16, person=PERSON)
    h.update(SPLIT_STREAM + b"\0" + seed.to_bytes(8, "little"))
    return h


def _at(path: Path, n: int) -> str:
    """Where item n is: `file:line` for JSON lines, `file: row n` for Parquet."""
    return f"{path}: row {n}" if path.suffix == ".parquet" else f"{path}:{n}"


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def unique_items(path: Path, rows: Iterable[tuple[int, str, Any]]) -> list[tuple[str, Any]]:
    """The items of `rows` with exact copies dropped (the first is kept, one warning says how many).

    A question seen again with another answer (unequal, or of another type: 1 is not "1") is a ValueError naming
    both lines: which answer is right is the user's call, not ours.
    """
    first: dict[str, tuple[int, Any]] = {}
    items: list[tuple[str, Any]] = []
    repeats: list[tuple[int, int]] = []
    for n, question, answer in rows:
        seen = first.get(question)
        if seen is None:
            first[question] = (n, answer)
            items.append((question, answer))
            continue
        m, earlier = seen
        if type(answer) is not type(earlier) or answer != earlier:
            unit = "row" if path.suffix == ".parquet" else "line"
            raise ValueError(f"{_at(path, n)}: question {_short(question)} repeats {unit} {m} with another answer "
                             f"({answer!r} here, {earlier!r} on {unit} {m}); keep one answer per question")
        repeats.append((n, m))
    if repeats:
        n, m = repeats[0]
        log.warning("%s: dropped %d repeated item(s) (same question and answer; the first copy is kept), e.g. %s "
                    "repeats %d", path, len(repeats), _at(path, n), m)
    return items


@dataclass(frozen=True)
class QAData:
    """A QA file as read once: the sha256 of the bytes parsed, the unique items in file order, and the split
    (indices into `items`, ascending). Tuples, so env copies can share one instance."""

    sha256: str
    items: Items
    train: tuple[int, ...]
    held: tuple[int, ...]


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def load_qa(path: str | Path, question_field: str, answer_field: str, split_seed: int,
            held_out_fraction: float) -> QAData:
    """Read, check, de-duplicate and split a QA file, once per process while the file is unchanged.

    A worker builds one env per micro-batch slot (16 by default) and each would otherwise read and parse the
    whole file; the memo is keyed by the file's identity and stat (size, mtime, ctime, inode), so a changed file
    is read again. The QAData handed out is immutable, so the copies share it.
    """
    path = Path(path).resolve()
    st = path.stat()
    return _load(path, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino), question_field, answer_field,
                 int(split_seed), float(held_out_fraction))


@functools.lru_cache(maxsize=8)
def _load(path: Path, stat: tuple[int, ...], question_field: str, answer_field: str, split_seed: int,
          held_out_fraction: float) -> QAData:
    """load_qa's pure part (a failure is not memoised: lru_cache stores only results)."""
    data = path.read_bytes()
    items = unique_items(path, _parse(path, data, question_field, answer_field))
    train: list[int] = []
    held: list[int] = []
    for i, (question, _) in enumerate(items):
        (held if held_out(split_seed, question, held_out_fraction) else train).append(i)
    return QAData(hashlib.sha256(data).hexdigest(), Items(items), tuple(train), tuple(held))
