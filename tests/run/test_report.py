"""`steprl report` on a real smoke run (warm-up, RL, distillation, eval through the CLI): the page's parts, no
network, and, where a headless Chromium and playwright are installed, no console error when it is opened."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from steprl.cli import main

SMOKE = ["stages=[warmup,rl,distill,eval]", "warmup.steps=4", "eval.episodes=4", "eval.micro_batch=4"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    import torch

    threads = torch.get_num_threads()
    try:
        assert main(["train", "smoke", f"run.root={root}", "run.name=r", *SMOKE]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "r"


def test_train_writes_the_report_and_links_it_in_its_last_lines(smoke_run, capsys):
    assert (smoke_run / "report.html").is_file()
    assert main(["report", str(smoke_run), "--out", str(smoke_run / "again.html")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"report: {smoke_run / 'again.html'}")


def test_the_page_has_every_part_and_nothing_to_fetch(smoke_run):
    page = (smoke_run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # images inline, links within the page
    assert page.count('<img class="chart"') == 8  # 4 RL charts + 4 distillation charts
    for section in ("curves", "curves-distill", "stages", "eval", "episodes", "about"):
        assert f'id="{section}"' in page
    stages = re.findall(r"<tr><td class=l>r</td><td class=l>(\w+)</td>", page)
    assert stages == ["warmup", "rl", "distill", "eval"]
    assert "teacher (rl policy)" in page and "student (distilled)" in page
    steps = re.findall(r"<summary>step (\d+): mean reward", page)
    assert steps == ["0", "1", "2"]  # smoke: 3 RL steps
    assert len(re.findall(r'<div class="ep"><h4>(best|median|worst): episode', page)) == 9
    assert page.count('class="seg agent"') >= 9 and 'class="seg env"' in page
    assert "machine (machine.json)" in page and "cpu_model" in page and "topology (topology.json)" in page


def test_report_compares_runs_and_names_a_bad_run_directory(smoke_run, tmp_path, capsys):
    out = tmp_path / "both.html"
    assert main(["report", str(smoke_run), str(smoke_run / "distill"), "--out", str(out)]) == 0
    page = out.read_text()
    assert "steprl report: r, r/distill" in page and page.count('<img class="chart"') == 8
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a steprl run directory" in capsys.readouterr().err


def _chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_the_page_opens_in_headless_chromium_without_a_console_error(smoke_run):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: playwright is not installed (pip install playwright; it drives a system Chromium)")
        pytest.skip("playwright is not installed")
    binary = _chromium()
    if binary is None:
        print("skipped: no Chromium on PATH (e.g. apt-get install chromium-headless-shell)")
        pytest.skip("no Chromium on PATH")
    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(Path(smoke_run / "report.html").resolve().as_uri())
        shown = page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
        browser.close()
    assert problems == []
    assert shown == 8 and all(u.startswith(("file:", "data:")) for u in requests)
