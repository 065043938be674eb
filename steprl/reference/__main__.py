"""`python -m steprl.reference [--check]`: rewrite docs/reference/ from the code, or (--check) exit 1 naming the
pages that are stale."""

from __future__ import annotations

import argparse
import sys

from steprl.console import emit, warn
from steprl.reference.pages import REGENERATE, stale_pages, write_pages


def main(argv: list[str] | None = None) -> int:
    """Write the reference pages (or only check them); returns the exit status."""
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page differs")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for rel in stale:
            warn(f"{rel}: differs from the code; run `{REGENERATE}`")
        return 1 if stale else 0
    for rel in write_pages():
        emit(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
