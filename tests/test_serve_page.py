"""Tests of the playground page in a real headless browser (Debian's chromium, skipped where there
is none), driven through the DevTools protocol on a pipe: it lists the model, types a prompt,
streams a completion in as coloured tokens, stops a long one, and logs no errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_serve_http import PROMPT, Server

BROWSER = next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
               None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="no headless Chromium here (apt-get install chromium)")]


class Browser:
    """Headless chromium speaking the DevTools protocol over --remote-debugging-pipe: it reads
    commands on its descriptor 3 and writes answers and events on 4, each a JSON text ended by NUL."""

    def __init__(self, profile: Path) -> None:
        commands_read, self._commands = os.pipe()
        self._answers, answers_written = os.pipe()

        # In the child the pipe ends become descriptors 3 and 4, kept open since pass_fds names them
        # (its closing of other descriptors comes after this function).
        def as_three_and_four() -> None:
            high_in, high_out = os.dup(commands_read), os.dup(answers_written)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "about:blank"]
        self.process = subprocess.Popen([BROWSER, *flags], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, pass_fds=(3, 4, commands_read, answers_written),
                                        preexec_fn=as_three_and_four)
        os.close(commands_read)
        os.close(answers_written)
        self.messages: list[dict] = []
        self._arrived = threading.Condition()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.session = None

    def _read(self) -> None:
        buffered = b""
        while chunk := os.read(self._answers, 65536):
            buffered += chunk
            *whole, buffered = buffered.split(b"\0")
            with self._arrived:
                self.messages.extend(json.loads(text) for text in whole)
                self._arrived.notify_all()

    def send(self, method: str, **params: Any) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        with self._arrived:
            assert self._arrived.wait_for(lambda: self._answer(self._next_id), timeout=60), method
            answer = self._answer(self._next_id)
        assert "error" not in answer, answer
        return answer["result"]

    def _answer(self, number: int) -> dict | None:
        return next((m for m in self.messages if m.get("id") == number), None)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Runtime.enable")
        self.send("Page.enable")
        self.send("Page.navigate", url=url)

    def run(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str) -> Any:
        for _ in range(1200):  # a guard against a hang, not a speed check
            value = self.run(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"never true: {expression}")

    def errors(self) -> list[dict]:
        return [m for m in self.messages if m.get("method") == "Runtime.exceptionThrown"
                or (m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] == "error")]

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._commands)


@pytest.fixture(scope="module")
def page(char_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Browser, Server]]:
    server = Server(char_checkpoint, "--max-tokens-limit", "3000")
    browser = Browser(tmp_path_factory.mktemp("profile"))
    try:
        browser.open(server.url + "/")
        yield browser, server
    finally:
        browser.close()
        server.stop()


def test_the_page_lists_the_model_and_streams_coloured_tokens(page):
    browser, _ = page
    assert browser.wait_for("document.querySelector('#model option')?.value") == "prose"
    browser.run(f"$('prompt').value = {json.dumps(PROMPT)}; $('max_tokens').value = '40'; $('generate').click()")
    browser.wait_for("$('status').textContent.startsWith('done')")
    tokens = browser.run("[...document.querySelectorAll('#output .token')].map((t) => t.textContent)")
    assert len(tokens) == 40
    shown = browser.run("$('output').textContent")
    assert shown == PROMPT + "".join(tokens)
    assert "p=" in browser.run("document.querySelector('#output .token').title")
    assert browser.errors() == []


def test_stop_cancels_a_long_generation_and_the_server_drops_its_row(page):
    browser, server = page
    browser.run("$('max_tokens').value = '3000'; $('generate').click()")
    browser.wait_for("document.querySelectorAll('#output .token').length > 5")
    browser.run("$('stop').click()")
    assert browser.wait_for("$('status').textContent") == "stopped"
    assert browser.run("document.querySelectorAll('#output .token').length") < 3000
    for _ in range(400):  # a guard against a hang, not a speed check
        metrics = httpx.get(server.url + "/metrics").text
        if "textgen_batch_rows 0.0" in metrics:
            break
        time.sleep(0.05)
    assert "textgen_batch_rows 0.0" in metrics
    assert browser.errors() == []


def test_a_generation_cut_short_by_a_shutdown_says_so(page, char_checkpoint):
    """SIGTERM past the drain timeout ends a running stream with an error event: the page shows
    its message as an error, in view below the text made so far, and logs nothing."""
    browser, _ = page
    draining = Server(char_checkpoint, "--drain-timeout", "0.5", "--max-tokens-limit", "1000000")
    try:
        browser.open(draining.url + "/")
        browser.wait_for("document.querySelector('#model option')?.value")
        browser.run("$('max_tokens').value = '1000000'; $('generate').click()")
        # A long text scrolls inside its box, which follows the end, so the status line stays in view.
        browser.wait_for("$('output').scrollHeight > $('output').clientHeight + 100"
                         " || document.querySelectorAll('#output .token').length > 3000")
        assert browser.run("(o => o.scrollHeight > o.clientHeight + 100"
                           " && o.scrollHeight - o.scrollTop - o.clientHeight < 60)($('output'))")
        draining.terminate()
        assert "cut short" in browser.wait_for("$('status').className === 'error' && $('status').textContent")
        assert browser.run("document.querySelectorAll('#output .token').length") > 5
        assert browser.errors() == []
    finally:
        assert draining.stop()[0] == 0
