"""Reading a QA file (finding 14): UTF-8 whatever the locale, lines split on "\\n" only (U+2028 and U+0085 are
legal inside JSON strings), and a null or non-string question / null answer is an error naming file and line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from steprl.envs.qa_file import read_items


def write_lines(path, rows) -> str:
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    return str(path)


def test_line_and_paragraph_separators_inside_strings_are_text(tmp_path) -> None:
    rows = [{"question": "first\u2028line\u0085next\u2029para", "answer": "a"}, {"question": "q2", "answer": "b"}]
    items = read_items(write_lines(tmp_path / "qa.jsonl", rows), "question", "answer")
    assert items == [("first\u2028line\u0085next\u2029para", "a"), ("q2", "b")]


def test_crlf_lines_and_a_byte_order_mark_read_as_utf8(tmp_path) -> None:
    path = tmp_path / "qa.jsonl"
    text = '{"question": "caf\u00e9?", "answer": "x"}\r\n\r\n{"question": "q", "answer": 1}\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert read_items(str(path), "question", "answer") == [("caf\u00e9?", "x"), ("q", 1)]


def test_utf8_is_read_under_a_non_utf8_locale(tmp_path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [{"question": "\u00bfcu\u00e1nto es 2+2?", "answer": "4"}])
    code = ("import sys; from steprl.envs.qa_file import read_items; "
            "print(ascii(read_items(sys.argv[1], 'question', 'answer')))")
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == ascii([("\u00bfcu\u00e1nto es 2+2?", "4")])


def test_invalid_utf8_names_the_file_and_line(tmp_path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b'{"question": "q1", "answer": "a"}\n{"question": "q\xff", "answer": "b"}\n')
    with pytest.raises(ValueError, match=r"qa\.jsonl:2: not valid UTF-8"):
        read_items(str(path), "question", "answer")


@pytest.mark.parametrize(("row", "what"), [
    ({"question": None, "answer": "a"}, "'question' is null"),
    ({"question": "q", "answer": None}, "'answer' is null"),
    ({"question": 7, "answer": "a"}, "'question' must be a string, got int"),
    ({"question": ["q"], "answer": "a"}, "'question' must be a string, got list"),
])
def test_a_null_or_non_string_field_names_the_file_and_line(tmp_path, row, what) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [{"question": "ok", "answer": "a"}, row])  # row on line 2
    with pytest.raises(ValueError) as e:
        read_items(path, "question", "answer")
    assert f"qa.jsonl:2: {what}" in str(e.value)
