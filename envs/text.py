"""The character set every env speaks (printable ASCII plus newline) and how foreign text is made to fit it."""

from __future__ import annotations

import re

from gymnasium import spaces

#: Printable ASCII (space .. tilde) plus newline: the agent's character-level vocabulary.
CHARSET: str = "".join(chr(c) for c in range(32, 127)) + "\n"
_CHARSET_SET = frozenset(CHARSET)

#: Default size limits of the Text spaces (characters).
MAX_ACTION_CHARS = 4096
MAX_OBS_CHARS = 8192

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def to_ascii(text: str) -> str:
    """Return `text` with every character outside CHARSET replaced by an ASCII escape.

    ANSI colour codes are dropped, CR LF becomes LF, a tab becomes a space, and any other
    character becomes `\\xHH`, `\\uHHHH` or `\\UHHHHHHHH`. The result is always in CHARSET.
    """
    text = _ANSI_ESCAPE.sub("", str(text)).replace("\r\n", "\n").replace("\t", " ")
    if all(ch in _CHARSET_SET for ch in text):
        return text
    out = []
    for ch in text:
        if ch in _CHARSET_SET:
            out.append(ch)
        else:
            code = ord(ch)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    return "".join(out)


def truncate(text: str, max_chars: int, marker: str = "...[truncated]") -> str:
    """Cut `text` to at most `max_chars` characters, ending with `marker` when cut."""
    if len(text) <= max_chars:
        return text
    keep = max(0, max_chars - len(marker))
    return text[:keep] + marker[: max_chars - keep]


def fit(text: str, max_chars: int) -> str:
    """ASCII-escape then truncate: what every observation goes through before leaving an env."""
    return truncate(to_ascii(text), max_chars)


def text_space(max_length: int) -> spaces.Text:
    """A `spaces.Text` over CHARSET (Gymnasium's default charset is alphanumeric only)."""
    return spaces.Text(max_length=max_length, min_length=0, charset=CHARSET)
