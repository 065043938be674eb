"""The QA split is keyed on each item's question text (finding 8): editing the file elsewhere never moves an item
across the split, copies of a question are one item, and one question with two answers is an error."""

from __future__ import annotations

import json
import logging

import pytest

from steprl.envs.qa_file import QAFileEnv, held_out


def write(path, rows) -> str:
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows), encoding="utf-8")
    return str(path)


def sides(env: QAFileEnv) -> dict[str, bool]:
    """question -> held out?"""
    held = set(env.held)
    return {q: i in held for i, (q, _) in enumerate(env.items)}


ROWS = [(f"What is {i} times 3?", str(3 * i)) for i in range(1000)]


def test_prepending_a_line_moves_no_other_item_across_the_split(tmp_path) -> None:
    before = sides(QAFileEnv(write(tmp_path / "a.jsonl", ROWS)))
    after = sides(QAFileEnv(write(tmp_path / "b.jsonl", [("A new first question?", "1"), *ROWS])))
    assert sum(before.values()) > 100  # a real held-out set (about 0.2 x 1000), not a vacuous comparison
    assert {q: after[q] for q in before} == before


def test_the_split_does_not_depend_on_file_order(tmp_path) -> None:
    forward = sides(QAFileEnv(write(tmp_path / "a.jsonl", ROWS)))
    assert sides(QAFileEnv(write(tmp_path / "b.jsonl", ROWS[::-1]))) == forward


def test_the_split_is_the_seeded_rule_on_the_question_text(tmp_path) -> None:
    env = QAFileEnv(write(tmp_path / "a.jsonl", ROWS), held_out_fraction=0.3, split_seed=5)
    assert list(env.held) == [i for i, (q, _) in enumerate(ROWS) if held_out(5, q, 0.3)]
    assert list(env.train) == [i for i, (q, _) in enumerate(ROWS) if not held_out(5, q, 0.3)]
    path = write(tmp_path / "b.jsonl", ROWS)
    assert sides(QAFileEnv(path, split_seed=6)) != sides(QAFileEnv(path, split_seed=0))


def test_copies_of_an_item_are_one_item_on_one_side(tmp_path, caplog) -> None:
    rows = [*ROWS[:20], *[("Copied question?", "7")] * 50, *ROWS[20:40]]
    with caplog.at_level(logging.WARNING, logger="steprl.envs.qa_file"):
        env = QAFileEnv(write(tmp_path / "a.jsonl", rows))
    assert [q for q, _ in env.items] == [q for q, _ in [*ROWS[:20], ("Copied question?", "7"), *ROWS[20:40]]]
    assert "49 repeated item(s)" in caplog.text and "a.jsonl:22" in caplog.text


def test_one_question_with_two_answers_names_both_lines(tmp_path) -> None:
    rows = [*ROWS[:3], ("What is 1 times 3?", "4"), *ROWS[3:5]]  # line 2 says 3, line 4 says 4
    with pytest.raises(ValueError) as e:
        QAFileEnv(write(tmp_path / "a.jsonl", rows))
    assert "a.jsonl:4" in str(e.value) and "line 2" in str(e.value) and "'4'" in str(e.value) and "'3'" in str(e.value)


def test_an_answer_of_another_type_is_another_answer(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"question": "q", "answer": 1}\n{"question": "q", "answer": "1"}\n'
                    '{"question": "r", "answer": 2}\n')
    with pytest.raises(ValueError, match="a.jsonl:2"):
        QAFileEnv(str(path), held_out_fraction=0.0)
