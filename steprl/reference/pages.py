"""The generated reference pages: where each lives in the checkout and the function that writes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from steprl.reference.cli_page import CHECKOUT, cli_page
from steprl.reference.config_page import config_page

PAGES: dict[str, Callable[[], str]] = {
    "docs/reference/config.md": config_page,
    "docs/reference/cli.md": cli_page,
}
"""Path relative to the checkout -> the function that generates that page's text."""

REGENERATE = "python -m steprl.reference"
"""The command that rewrites every page (named in the error when a checked-in page is stale)."""


def stale_pages(root: Path = CHECKOUT) -> list[str]:
    """The pages under `root` whose checked-in text differs from what the code generates now."""
    return [rel for rel, make in PAGES.items()
            if not (root / rel).is_file() or (root / rel).read_text() != make()]


def write_pages(root: Path = CHECKOUT) -> list[str]:
    """Rewrite every page under `root`; returns the ones whose text changed."""
    changed = []
    for rel, make in PAGES.items():
        path, text = root / rel, make()
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(rel)
    return changed
