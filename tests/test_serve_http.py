"""Tests of `textgen serve` as a real process on a free port of 127.0.0.1, driven as users drive
it: the official openai client, httpx on the raw wire, hostile requests beside a running stream,
a client that goes away, and SIGTERM."""

from __future__ import annotations

import json
import shutil
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow
KEY = "sesame"
PROMPT = "the "  # every symbol in the suite's prose, so the char model knows them


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m textgen serve ...` on a free port, ready once /health answers 200."""

    def __init__(self, checkpoint: Path, *options: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.terminated = False
        environment = {k: v for k, v in os.environ.items() if k != "TEXTGEN_API_KEY"}
        environment.update({"OMP_NUM_THREADS": "1", **(env or {})})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "textgen", "serve", f"prose={checkpoint}", "--port", str(self.port), *options],
            env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(1200):  # a guard against a hang, not a speed check
            assert self.process.poll() is None, self.process.communicate()
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("the server did not come up")

    def terminate(self) -> None:
        """SIGTERM, once: a second one would stop the server without draining."""
        if not self.terminated and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.terminated = True

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, then the exit code and what it printed."""
        self.terminate()
        try:
            out, err = self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        return self.process.returncode, out, err


@pytest.fixture(scope="module")
def server(char_checkpoint: Path) -> Iterator[Server]:
    running = Server(char_checkpoint, "--max-batch", "8", "--max-queue", "16", "--max-tokens-limit", "200000")
    yield running
    code, _, err = running.stop()
    assert code == 0 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def sse_chunks(lines: Iterator[str]) -> list[dict]:
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


def streamed_text(url: str, **asked: object) -> str:
    body = {"model": "prose", "prompt": PROMPT, "stream": True, **asked}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        return "".join(c["choices"][0]["text"] for c in sse_chunks(response.iter_lines()) if c["choices"])


# --- the openai client -------------------------------------------------------------------------

def test_the_openai_client_completes_whole_and_streamed_alike(client):
    whole = client.completions.create(model="prose", prompt=PROMPT, max_tokens=40, seed=5)
    streamed = client.completions.create(model="prose", prompt=PROMPT, max_tokens=40, seed=5, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == whole.choices[0].text
    assert whole.usage.completion_tokens == 40 and whole.system_fingerprint.startswith("fp_")


def test_the_openai_client_gets_n_choices_with_logprobs(client):
    reply = client.completions.create(model="prose", prompt=PROMPT, max_tokens=10, n=3, logprobs=2, seed=1)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    for choice in reply.choices:
        assert "".join(choice.logprobs.tokens) == choice.text
        assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)


def test_the_openai_client_scores_a_prompt_with_echo(client):
    reply = client.completions.create(model="prose", prompt="the sea", max_tokens=0, echo=True, logprobs=0)
    assert reply.choices[0].text == "the sea"
    assert reply.choices[0].logprobs.token_logprobs[0] is None
    assert all(value < 0 for value in reply.choices[0].logprobs.token_logprobs[1:])


def test_the_openai_client_chats_whole_and_streamed(client):
    messages = [{"role": "user", "content": "the sea"}]
    extra = {"unknown": "skip"}  # the prose model never saw the template's colons
    whole = client.chat.completions.create(model="prose", messages=messages, max_tokens=12, seed=4, extra_body=extra)
    stream = client.chat.completions.create(model="prose", messages=messages, max_tokens=12, seed=4, stream=True,
                                            extra_body=extra)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == \
        whole.choices[0].message.content
    assert whole.choices[0].message.role == "assistant"


def test_textgens_own_settings_go_through_extra_body(client):
    greedy = client.completions.create(model="prose", prompt=PROMPT, max_tokens=20, temperature=0)
    top_one = client.completions.create(model="prose", prompt=PROMPT, max_tokens=20, extra_body={"top_k": 1},
                                        seed=9)
    assert greedy.choices[0].text == top_one.choices[0].text


@pytest.mark.parametrize("asked, error, param", [
    (dict(model="prose", prompt=PROMPT, temperature=-1), openai.BadRequestError, "temperature"),
    (dict(model="prose", prompt=PROMPT, max_tokens=10**9), openai.BadRequestError, "max_tokens"),
    (dict(model="prose", prompt=PROMPT, n=10**6), openai.BadRequestError, "n"),
    (dict(model="nobody", prompt=PROMPT), openai.NotFoundError, "model"),
], ids=["temperature", "max_tokens", "n", "model"])
def test_refusals_arrive_as_the_clients_own_exceptions_naming_the_field(client, asked, error, param):
    with pytest.raises(error) as refused:
        client.completions.create(**asked)
    assert refused.value.body["param"] == param


def test_a_server_with_a_key_refuses_the_client_without_it(char_checkpoint):
    keyed = Server(char_checkpoint, env={"TEXTGEN_API_KEY": KEY})
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0).models.list()
        models = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0).models.list()
        assert [model.id for model in models.data] == ["prose"]
    finally:
        assert keyed.stop()[0] == 0


# --- hostile requests, each beside a stream that must finish unchanged --------------------------

def raw_request(port: int, data: bytes, then_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(data)
        if then_close:
            return b""
        return connection.recv(65536)


def cut_off_body(port: int) -> None:
    raw_request(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 500\r\n\r\n{\"model\": \"pro")


def five_hundred_connections(port: int) -> None:
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(500)]
    for connection in sockets:
        connection.close()


def a_stream_nobody_reads(port: int) -> None:
    body = json.dumps({"model": "prose", "prompt": PROMPT, "max_tokens": 3000, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(1.0)  # the stream runs and its client reads nothing, then goes away


def ten_megabyte_prompt(port: int) -> None:
    response = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60,
                          json={"model": "prose", "prompt": "a" * 10_000_000})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


HOSTILE_BODIES = [
    (b"{not json", 400, "the request body is not valid JSON"),
    (b"[1, 2, 3]", 400, "the request body must be a JSON object"),
    (b'{"model": "prose", "prompt": "the ", "n": 1000000}', 400, "n must be at least 1 and at most"),
    (b'{"model": "prose", "prompt": "the ", "max_tokens": 1000000000}', 400, "max_tokens must be at least 1"),
    (b'{"model": "prose", "prompt": "the ", "temperature": "NaN"}', 400, "temperature must be a number"),
    (json.dumps({"model": "prose", "prompt": "the ", "stop": ["x"] * 1000}).encode(), 400, "stop takes at most"),
    (b'{"model": "nobody", "prompt": "the "}', 404, "'nobody' is not served here"),
]


def refused_body(body: bytes, status: int, words: str) -> Callable[[int], None]:
    def send(port: int) -> None:
        response = httpx.post(f"http://127.0.0.1:{port}/v1/completions", content=body, timeout=60,
                              headers={"Content-Type": "application/json"})
        assert (response.status_code, words in response.json()["error"]["message"]) == (status, True), response.text
    send.__name__ = words
    return send


@pytest.mark.parametrize("hostile", [cut_off_body, five_hundred_connections, a_stream_nobody_reads,
                                     ten_megabyte_prompt, *(refused_body(*case) for case in HOSTILE_BODIES)],
                         ids=lambda f: f.__name__)
def test_a_hostile_client_disturbs_no_one_else(server, hostile):
    alone = streamed_text(server.url, max_tokens=200, seed=21)
    beside: list[str] = []
    stream = threading.Thread(target=lambda: beside.append(streamed_text(server.url, max_tokens=200, seed=21)))
    stream.start()
    hostile(server.port)
    stream.join(120)
    assert beside == [alone]
    assert httpx.get(server.url + "/health").status_code == 200


def batch_rows_fall_to_zero(url: str) -> bool:
    for _ in range(400):  # a guard against a hang, not a speed check
        if batch_rows(url) == 0:
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_goes_away_leaves_the_batch(server):
    body = {"model": "prose", "prompt": PROMPT, "max_tokens": 3000, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as response:
        next(response.iter_lines())
    assert batch_rows_fall_to_zero(server.url)


def test_a_whole_request_whose_client_gives_up_leaves_the_batch(server):
    body = {"model": "prose", "prompt": PROMPT, "max_tokens": 200_000}  # far more than it makes before giving up
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
    assert batch_rows_fall_to_zero(server.url)
    metrics = httpx.get(server.url + "/metrics").text.splitlines()
    made = float(next(line.split()[-1] for line in metrics if line.startswith("textgen_tokens_generated_total")))
    assert made < 200_000
    assert not [line for line in metrics if line.startswith('textgen_requests_total{route="/v1/completions",status="5')]


def batch_rows(url: str) -> float:
    return float(next(line.split()[-1] for line in httpx.get(url + "/metrics").text.splitlines()
                      if line.startswith("textgen_batch_rows ")))


def test_sigterm_cuts_running_completions_short_with_openais_error_shape_and_exits_0(char_checkpoint):
    """Past the drain timeout a running completion is not passed off as finished: a stream ends
    with an error event and no [DONE] (the openai client raises APIError), a whole response is a
    503; neither carries a finish_reason outside OpenAI's stop and length."""
    # Far more tokens than the tiny model writes before the drain timeout, whatever the machine.
    draining = Server(char_checkpoint, "--drain-timeout", "0.5", "--max-tokens-limit", "1000000")
    whole: list[httpx.Response] = []
    body = {"model": "prose", "prompt": PROMPT, "max_tokens": 1_000_000}
    asking = threading.Thread(target=lambda: whole.append(
        httpx.post(draining.url + "/v1/completions", json=body, timeout=60)))
    asking.start()
    with httpx.stream("POST", draining.url + "/v1/completions", json={**body, "stream": True}, timeout=60) as response:
        lines = response.iter_lines()
        first = next(lines)
        for _ in range(400):  # both running before the signal; a guard against a hang, not a speed check
            if batch_rows(draining.url) >= 2:
                break
            time.sleep(0.05)
        draining.terminate()
        data = [line.removeprefix("data: ") for line in [first, *lines] if line.startswith("data: ")]
    asking.join(60)
    code, out, err = draining.stop()
    assert "[DONE]" not in data
    error = json.loads(data[-1])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "shutting_down"
    assert "cut short" in error["message"]
    chunks = [json.loads(line) for line in data[:-1]]
    assert chunks and all(choice["finish_reason"] is None for chunk in chunks for choice in chunk["choices"])
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks)
    assert whole[0].status_code == 503 and "cut short" in whole[0].json()["error"]["message"]
    assert (code, "Traceback" in err) == (0, False), err
    assert "serving 'prose' at " + draining.url in out


# --- load, reload ------------------------------------------------------------------------------

def test_past_its_capacity_the_server_refuses_with_503_and_retry_after_and_loses_no_request(char_checkpoint):
    small = Server(char_checkpoint, "--max-batch", "1", "--max-queue", "1", "--max-tokens-limit", "3000")
    answers: list[tuple[int, str | None, dict | None]] = []

    def ask() -> None:
        body = {"model": "prose", "prompt": PROMPT, "max_tokens": 600, "stream": True}
        with httpx.stream("POST", small.url + "/v1/completions", json=body, timeout=120) as response:
            response.read()
            error = response.json()["error"] if response.status_code != 200 else None
            answers.append((response.status_code, response.headers.get("retry-after"), error))

    try:
        clients = [threading.Thread(target=ask) for _ in range(4)]  # twice what it holds
        for client in clients:
            client.start()
        for client in clients:
            client.join(120)
    finally:
        assert small.stop()[0] == 0
    assert len(answers) == 4 and {status for status, _, _ in answers} <= {200, 503}
    refused = [(retry, error) for status, retry, error in answers if status == 503]
    assert refused and all(int(retry) >= 1 and error["code"] == "server_busy" for retry, error in refused)


def test_reload_serves_a_new_best_saved_into_the_folder(char_checkpoint, tmp_path, prose, make_checkpoint):
    served = tmp_path / "prose"
    shutil.copytree(char_checkpoint, served)
    reloading = Server(served, "--reload")
    try:
        before = httpx.get(reloading.url + "/v1/models").json()["data"][0]["fingerprint"]
        make_checkpoint(served, prose, steps=5)  # a training run's atomic save of a new best
        for _ in range(600):  # a guard against a hang, not a speed check
            after = httpx.get(reloading.url + "/v1/models").json()["data"][0]["fingerprint"]
            if after != before:
                break
            time.sleep(0.05)
        assert after != before
        assert httpx.post(reloading.url + "/v1/completions", json={"model": "prose", "prompt": PROMPT}).status_code == 200
    finally:
        assert reloading.stop()[0] == 0


def test_several_worker_processes_serve_and_stop_cleanly(char_checkpoint):
    workers = Server(char_checkpoint, "--workers", "2")
    try:
        texts = {httpx.post(workers.url + "/v1/completions", timeout=60,
                            json={"model": "prose", "prompt": PROMPT, "seed": 3, "max_tokens": 20}).json()[
                     "choices"][0]["text"] for _ in range(4)}
    finally:
        code, _, err = workers.stop()
    assert len(texts) == 1  # the same seed gives the same text whichever process answers
    assert (code, "Traceback" in err) == (0, False), err


def test_serve_help_and_the_python_api_import_no_web_framework():
    code = ("from textgen.cli import main\ntry:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
            "import textgen.api, sys\nprint(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr
