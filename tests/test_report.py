"""Tests for the report page of `textgen evaluate --html`: what it holds, that it fetches nothing
and escapes the user's text, and that it loads in a real headless browser (Debian's chromium,
skipped where there is none) without console errors."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from textgen.cli import main

TEXT = 'The keeper climbed the stairs <script>alert("no")</script> & lit the lamp.\n' * 3


@pytest.fixture(scope="module")
def report(tmp_path_factory, prose, make_checkpoint) -> Path:
    folder = tmp_path_factory.mktemp("report")
    make_checkpoint(folder / "char", prose + TEXT, "char")
    make_checkpoint(folder / "word", prose + TEXT, "word")
    (folder / "text.txt").write_text(TEXT, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        with pytest.raises(SystemExit) as done:
            main(["evaluate", "char", "word", "--text", "text.txt", "--html", "report.html", "--json"])
    assert done.value.code in (0, None)
    return folder / "report.html"


def test_the_report_holds_the_comparison_the_coloured_text_and_the_charts(report):
    page = report.read_text(encoding="utf-8")
    assert "<td>char</td>" in page and "<td>word</td>" in page
    tokens = re.findall(r'<span class="t" style="background: #[0-9a-f]{6}" data-tip="([^"]*)">', page)
    assert len(tokens) == len(TEXT) - 1  # every character after the first, each with its tooltip
    assert all(re.match(r"\d+\.\d\d bits, p = \d\.\d{3}\n", tip) for tip in tokens)
    assert all(tip.count("\n") == 5 for tip in tokens)  # and the five the model preferred
    for title in ("Memory reach", "Fading gradients", "Cells that track the text"):
        assert title in page
    assert "Training curves" not in page  # a checkpoint made without a run has no metrics to draw
    assert page.count("<svg") == 2
    assert page.count("<polyline") >= 2 + 2  # two models' memory, and each model's layer of gradients


def test_the_surprise_view_shows_the_whole_text_its_first_token_uncoloured(report):
    page = report.read_text(encoding="utf-8")
    surprise = re.search(r'<div class="text" id="surprise">(.*?)</div>', page, re.S).group(1)
    assert html.unescape(re.sub(r"<[^>]+>", "", surprise)) == TEXT  # it begins "The", not "he"
    first = re.match(r'<span class="t" data-tip="([^"]*)">([^<]*)</span>', surprise)
    assert first is not None and first.group(2) == "T"  # no background: nothing predicted it
    assert first.group(1) == "the first token: nothing before it predicts it"


def test_the_report_fetches_nothing_and_escapes_the_users_text(report):
    page = report.read_text(encoding="utf-8")
    # The char model's tokens are single characters, each in its own span: < and & arrive escaped.
    assert "<script" not in page and '">&lt;</span>' in page and '">&amp;</span>' in page
    assert not re.search(r'\b(src|href)\s*=', page) and "@import" not in page and "url(" not in page


def _browser() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
                None)


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no headless Chromium here (apt-get install chromium)")
def test_the_report_loads_in_a_real_browser_without_console_errors(report, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    url = report.resolve().as_uri()
    shot = tmp_path / "report.png"
    shown = subprocess.run([_browser(), *flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
                           capture_output=True, text=True, timeout=300)
    assert shot.is_file() and shot.stat().st_size > 10_000, shown.stderr[-2000:]
    dom = subprocess.run([_browser(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=300)
    assert dom.stdout.count('class="t"') == len(TEXT) and "data-tip=" in dom.stdout  # the first one too
    console = [line for line in shown.stderr.splitlines() + dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "ERROR" in line or "Uncaught" in line], console
