"""Tests of the app's routes in this process (the ASGI app through Starlette's test client, no
server process): OpenAI's shapes whole and streamed, the error object and its statuses, the key,
/v1/models, /tokenize, /detokenize, /health and /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import textgen.serve
from textgen.errors import TextgenError

KEY = "sesame"


@pytest.fixture(scope="module")
def client(char_checkpoint: Path) -> Iterator[TestClient]:
    app = textgen.serve.serve_app({"prose": char_checkpoint}, max_batch=8, max_body=10_000, max_tokens_limit=200)
    with TestClient(app) as client:
        wait_until_loaded(client)
        yield client


def wait_until_loaded(client: TestClient) -> None:
    import time

    for _ in range(600):  # a guard against a hang, not a speed check
        if client.get("/health").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(client.get("/health").json())


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def sse_chunks(response) -> list[dict]:
    """Every data line of a stream, parsed, ending with [DONE]."""
    lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_a_completion_has_openais_fields_and_the_checkpoints_fingerprint(client):
    body = client.post("/v1/completions", json={"model": "prose", "prompt": "The ", "max_tokens": 12, "seed": 3,
                                                "n": 2}).json()
    assert set(body) == {"id", "object", "created", "model", "system_fingerprint", "choices", "usage"}
    assert (body["object"], body["model"], body["system_fingerprint"].startswith("fp_")) == \
        ("text_completion", "prose", True)
    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    assert all(choice["finish_reason"] in ("stop", "length") and choice["text"] for choice in body["choices"])
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_the_streamed_text_joins_to_the_whole_text_for_the_same_seed(client):
    asked = {"model": "prose", "prompt": ["The ", "the "], "max_tokens": 30, "seed": 11, "n": 2}
    whole = client.post("/v1/completions", json=asked).json()
    with client.stream("POST", "/v1/completions", json={**asked, "stream": True}) as response:
        chunks = sse_chunks(response)
    joined = ["", "", "", ""]
    for chunk in chunks:
        for choice in chunk["choices"]:
            joined[choice["index"]] += choice["text"]
    assert joined == [choice["text"] for choice in whole["choices"]]


def test_every_chunk_has_the_fields_strict_clients_require_and_usage_comes_last(client):
    asked = {"model": "prose", "prompt": "The ", "max_tokens": 8, "stream": True, "logprobs": 2,
             "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/completions", json=asked) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = sse_chunks(response)
    for chunk in chunks[:-1]:
        assert {"id", "object", "created", "model", "system_fingerprint", "choices", "usage"} <= set(chunk)
        assert chunk["usage"] is None and len(chunk["choices"]) == 1
        assert {"index", "text", "logprobs", "finish_reason"} <= set(chunk["choices"][0])
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert (chunks[-1]["choices"], chunks[-1]["usage"]["completion_tokens"]) == ([], 8)


def test_logprobs_give_each_tokens_logprob_and_its_alternatives(client):
    choice = client.post("/v1/completions", json={"model": "prose", "prompt": "The ", "max_tokens": 5,
                                                  "logprobs": 3, "seed": 1}).json()["choices"][0]
    logprobs = choice["logprobs"]
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert all(value <= 0 for value in logprobs["token_logprobs"])
    assert [len(top) for top in logprobs["top_logprobs"]] == [3] * 5


def test_echo_with_no_new_tokens_scores_the_prompt(client):
    choice = client.post("/v1/completions", json={"model": "prose", "prompt": "the cat", "max_tokens": 0,
                                                  "echo": True, "logprobs": 0}).json()["choices"][0]
    assert choice["text"] == "the cat"
    assert choice["logprobs"]["token_logprobs"][0] is None and len(choice["logprobs"]["tokens"]) == 7


def test_a_chat_completion_answers_as_the_assistant_in_chats_shape(client):
    # The prose model never saw the template's colons: skipped, as a user of such a model would ask.
    body = client.post("/v1/chat/completions", json={"model": "prose", "max_tokens": 10, "seed": 2, "unknown": "skip",
                                                     "messages": [{"role": "user", "content": "the sea"}]}).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert "\n" not in body["choices"][0]["message"]["content"]


def test_a_streamed_chat_opens_with_the_role_and_sends_deltas(client):
    asked = {"model": "prose", "max_tokens": 6, "stream": True, "unknown": "skip",
             "messages": [{"role": "user", "content": "a"}]}
    with client.stream("POST", "/v1/chat/completions", json=asked) as response:
        chunks = sse_chunks(response)
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("send, status, param, words", [
    (dict(content=b"{bad"), 400, None, "not valid JSON"),
    (dict(json=[1, 2]), 400, None, "must be a JSON object"),
    (dict(json={"model": "nobody", "prompt": "a"}), 404, "model", "'nobody' is not served here"),
    (dict(json={"model": "prose", "prompt": "a", "max_tokens": 10**9}), 400, "max_tokens", "at most 200"),
    (dict(json={"model": "prose", "prompt": "\u4e2d"}), 400, "unknown", "symbols the model never saw"),
    (dict(content=b"{" + b" " * 20_000 + b"}"), 413, None, "at most 10,000"),
], ids=["invalid-json", "not-an-object", "unknown-model", "huge-max-tokens", "unseen-symbol", "body-too-big"])
def test_a_bad_request_gets_openais_error_object_with_its_status(client, send, status, param, words):
    response = client.post("/v1/completions", **send)
    error = error_of(response)
    assert (response.status_code, error["param"]) == (status, param)
    assert words in error["message"] and "Traceback" not in response.text
    assert client.get("/health").status_code == 200


def test_unseen_symbols_are_skipped_when_asked(client):
    response = client.post("/v1/completions", json={"model": "prose", "prompt": "\u4e2dThe ", "unknown": "skip"})
    assert response.status_code == 200


def test_an_unknown_route_is_a_404_in_the_error_shape(client):
    response = client.get("/v2/anything")
    assert (response.status_code, error_of(response)["code"]) == (404, "not_found")


def test_models_lists_each_with_textgens_fields(client):
    (card,) = client.get("/v1/models").json()["data"]
    assert (card["id"], card["object"], card["owned_by"], card["tokenizer"]) == ("prose", "model", "textgen", "char")
    assert card["parameters"] > 0 and card["cell"] == "lstm"


def test_tokenize_and_detokenize_are_inverse(client):
    tokens = client.post("/tokenize", json={"model": "prose", "prompt": "the sea"}).json()
    assert (tokens["count"], "".join(tokens["pieces"])) == (7, "the sea")
    text = client.post("/detokenize", json={"model": "prose", "tokens": tokens["tokens"]}).json()["prompt"]
    assert text == "the sea"
    refused = client.post("/detokenize", json={"model": "prose", "tokens": [-1]})
    assert (refused.status_code, error_of(refused)["param"]) == (400, "tokens")


def test_metrics_count_requests_by_route_and_status(client):
    client.post("/v1/completions", content=b"{bad")
    text = client.get("/metrics").text
    assert 'textgen_requests_total{route="/v1/completions",status="400"}' in text


def test_the_page_is_served_at_the_root(client):
    response = client.get("/")
    assert (response.status_code, response.headers["content-type"].startswith("text/html")) == (200, True)


def test_a_server_with_a_key_refuses_requests_without_it_or_with_another(char_checkpoint):
    app = textgen.serve.serve_app([char_checkpoint], api_key=KEY)
    with TestClient(app) as client:
        wait_until_loaded(client)
        missing = client.get("/v1/models")
        wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        right = client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert (missing.status_code, error_of(missing)["code"]) == (401, "missing_api_key")
    assert (wrong.status_code, error_of(wrong)["code"]) == (401, "invalid_api_key")
    assert right.status_code == 200 and right.json()["data"][0]["id"] == char_checkpoint.name


def test_serve_app_refuses_a_folder_that_is_no_checkpoint(tmp_path):
    with pytest.raises(TextgenError, match="not a textgen checkpoint"):
        textgen.serve.serve_app({"x": tmp_path})


def test_a_quiet_stream_gets_keep_alives_between_its_events():
    import asyncio

    from textgen.serve.app import merged

    class SlowJob:
        async def __aiter__(self):
            await asyncio.sleep(0.2)
            yield "event"

    async def collect() -> list:
        return [event async for _, event in merged([SlowJob()], keepalive=0.01)]

    events = asyncio.run(collect())
    assert events[-1] == "event" and set(events[:-1]) == {None} and len(events) > 1


def test_health_and_completions_answer_503_until_the_models_are_loaded(char_checkpoint):
    app = textgen.serve.serve_app([char_checkpoint])
    client = TestClient(app)  # outside `with`: the app never starts, so nothing loads
    health = client.get("/health")
    refused = client.post("/v1/completions", json={"model": char_checkpoint.name, "prompt": "the "})
    assert (health.status_code, health.json()["status"]) == (503, "loading")
    assert (refused.status_code, refused.headers["retry-after"], error_of(refused)["code"]) == (503, "1", "loading")


def test_a_completion_whose_step_fails_ends_in_openais_error_shape_not_a_finish_reason(char_checkpoint):
    """A step that raises ends its requests: a whole one is a 500, a stream ends with an error
    event and no [DONE] (what OpenAI's clients read as an error), and the server goes on."""
    app = textgen.serve.serve_app({"prose": char_checkpoint}, max_batch=8)
    with TestClient(app) as client:
        wait_until_loaded(client)
        lane = app.state.textgen.engine._lanes["prose"]
        working = lane.step

        class Failing:
            def __call__(self, *args):
                raise RuntimeError("a step that fails")

            advance = __call__

        lane.step = Failing()
        body = {"model": "prose", "prompt": "The ", "max_tokens": 20}
        try:
            whole = client.post("/v1/completions", json=body)
            with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
                data = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
        finally:
            lane.step = working
        assert whole.status_code == 500 and error_of(whole)["code"] == "server_error"
        assert "[DONE]" not in data and json.loads(data[-1])["error"]["code"] == "server_error"
        assert client.post("/v1/completions", json=body).status_code == 200
