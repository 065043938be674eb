"""The docs site builds with `mkdocs build --strict` (mkdocs.yml at the repository root): a broken link, a missing
anchor, a page left out of the build or a missing included file (BENCHMARKS.md, RELIABILITY.md, README's intro) fails
here, as it would fail the site."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict_passes_and_renders_every_nav_page(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    config = (site / "reference" / "config" / "index.html").read_text()
    assert "run.seed" in config and "distill.student.layers" in config
    assert "<table>" in (site / "benchmarks" / "index.html").read_text()  # BENCHMARKS.md included, its tables rendered
    assert "Faults during a run" in (site / "reliability" / "index.html").read_text()
    assert "pure function of (config, seed, global step)" in (site / "index.html").read_text()  # README's intro
    assert "register_tool" in (site / "guide" / "environments" / "index.html").read_text()  # the tested example


def test_the_site_and_the_readme_link_only_to_files_that_exist():
    import re

    readme = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)#]+)", readme) if "://" not in t]
    assert targets and [t for t in targets if not (ROOT / t).exists()] == []
