"""docs/reference/ is generated from the code (steprl.reference): the checked-in pages must equal what the code
generates now, list every config key and every CLI flag, and pick up a new dataclass field with no other change."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, is_dataclass

from steprl.config import Config
from steprl.reference.cli_page import CHECKOUT, cli_page
from steprl.reference.config_page import config_page, section_text, undocumented_keys
from steprl.reference.pages import REGENERATE, stale_pages


def _keys(instance, prefix=""):
    for f in fields(instance):
        key = f"{prefix}{f.name}"
        value = getattr(instance, f.name)
        yield key
        if is_dataclass(value):
            yield from _keys(value, key + ".")


def test_the_checked_in_reference_pages_are_what_the_code_generates():
    stale = stale_pages()
    assert stale == [], f"{stale} differ from the code: regenerate with `{REGENERATE}` and commit the result"


def test_every_config_key_has_a_row_and_a_docstring():
    page = config_page()
    keys = list(_keys(Config()))
    assert len(keys) > 100  # the whole tree, nested sections included
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert missing == []
    assert undocumented_keys(Config()) == [], "write a docstring under each of these fields (the reference shows it)"
    assert "| `distill.student.layers` | `int` | `2` |" in page  # a nested section's own defaults
    assert "| `learner.lr` | `float` | `0.0001` | AdamW learning rate. |" in page  # inherited field, its doc


@dataclass
class _Inner:
    """An inner section."""

    depth: int = 3
    """How deep."""


@dataclass
class _Base:
    """A base section."""

    rate: float = 0.5
    """A rate, declared on the base."""


@dataclass
class _New(_Base):
    """A section someone just added."""

    label: str | None = None
    """A label | with a pipe
    over two lines."""
    sizes: tuple[int, int] = (1, 2)
    """Two sizes."""
    inner: _Inner = field(default_factory=lambda: _Inner(depth=7))
    """The inner part."""


def test_a_new_dataclass_field_appears_with_its_type_default_and_docstring():
    text = section_text("new", _New())
    assert "| `new.label` | `str or None` | `null` | A label \\| with a pipe over two lines. |" in text
    assert "| `new.sizes` | `tuple[int, int]` | `[1, 2]` | Two sizes. |" in text
    assert "| `new.rate` | `float` | `0.5` | A rate, declared on the base. |" in text
    assert "| `new.inner` | `_Inner` | section [new.inner](#newinner) | The inner part. |" in text
    assert undocumented_keys(_New()) == []


def test_every_cli_command_and_flag_is_in_the_cli_reference():
    from steprl.cli import build_parser

    page = cli_page()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) >= {"train", "resume", "replay", "distill", "eval", "envs", "doctor"}
    for name, parser in sub.choices.items():
        assert f"## steprl {name}\n" in page
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in page.split(f"## steprl {name}\n")[1].split("\n## ")[0], (name, flag)
    assert str(CHECKOUT) not in page and "docs/kernel-fingerprints" in page  # no path of this checkout


def test_prose_in_a_cell_is_escaped_outside_code_spans_only():
    from steprl.reference.config_page import cell

    assert cell("runs/<name>, k*B | `runs/<name> k*B`\n  next") == "runs/&lt;name>, k\\*B \\| `runs/<name> k*B` next"
