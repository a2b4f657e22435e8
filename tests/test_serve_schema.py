"""Tests that a completion request's fields are SampleConfig's own under their JSON names plus
OpenAI's, checked once, with every refusal naming the JSON field; and the chat template."""

from __future__ import annotations

import dataclasses

import pytest

from tests.test_settings import another_value
from textgen.config import MAX_STOPS, WIRE_DEFAULTS, SampleConfig, ServeConfig
from textgen.serve.schema import (RequestError, chat_prompt, json_name, parse_chat, parse_completion,
                                  wire_settings)

LIMITS = ServeConfig(max_batch=8, max_tokens_limit=100, max_prompt=50)


def refusal(body: object, parse=parse_completion) -> RequestError:
    with pytest.raises(RequestError) as refused:
        parse(body, LIMITS)
    return refused.value


def test_a_bare_request_gets_openais_defaults_and_sampleconfigs_for_the_rest():
    request = parse_completion({"model": "m", "prompt": "The "}, LIMITS)
    assert (request.prompts, request.max_tokens, request.sample.temperature, request.sample.top_k) == \
        (("The ",), WIRE_DEFAULTS["length"], WIRE_DEFAULTS["temperature"], WIRE_DEFAULTS["top_k"])
    assert (request.sample.top_p, request.sample.repetition_penalty, request.sample.unknown) == \
        (SampleConfig.top_p, SampleConfig.repetition_penalty, SampleConfig.unknown)
    assert (request.stream, request.logprobs, request.echo) == (False, None, False)


@pytest.mark.parametrize("setting", [s for s in wire_settings() if s.name != "length"], ids=lambda s: s.name)
def test_every_sampling_setting_is_a_json_field_under_its_wire_name(setting):
    value = another_value(setting)
    wire = list(value) if isinstance(value, tuple) else value
    request = parse_completion({"model": "m", "prompt": "a", json_name(setting.name): wire}, LIMITS)
    assert getattr(request.sample, setting.name) == value


def test_temperature_zero_is_greedy():
    assert parse_completion({"model": "m", "prompt": "a", "temperature": 0}, LIMITS).sample.greedy


@pytest.mark.parametrize("body, param, words", [
    ({"model": "m", "prompt": "a", "temperature": -1}, "temperature", "temperature must be greater than 0"),
    ({"model": "m", "prompt": "a", "temperature": "NaN"}, "temperature", "temperature must be a number"),
    ({"model": "m", "prompt": "a", "top_k": True}, "top_k", "top_k must be a whole number"),
    ({"model": "m", "prompt": "a", "top_k": 2.5}, "top_k", "top_k must be a whole number"),
    ({"model": "m", "prompt": "a", "top_p": 0}, "top_p", "top_p must be greater than 0"),
    ({"model": "m", "prompt": "a", "n": 0}, "n", "n must be at least 1"),
    ({"model": "m", "prompt": "a", "n": 10**6}, "n", "n must be at least 1 and at most"),
    ({"model": "m", "prompt": "a", "n": 9}, "n", "n must be at most 8 on this server"),
    ({"model": "m", "prompt": "a", "max_tokens": 10**9}, "max_tokens", "at most 100, got 1000000000"),
    ({"model": "m", "prompt": "a", "max_tokens": 0}, "max_tokens", "0 only with echo"),
    ({"model": "m", "prompt": "a", "max_tokens": -1}, "max_tokens", "max_tokens must be at least 1"),
    ({"model": "m", "prompt": "a", "seed": -3}, "seed", "seed must be between 0"),
    ({"model": "m", "prompt": "a", "logprobs": 6}, "logprobs", "logprobs must be between 0 and 5"),
    ({"model": "m", "prompt": "a", "presence_penalty": 3}, "presence_penalty", "between -2 and 2"),
    ({"model": "m", "prompt": "a", "stop": ["x"] * 1000}, "stop", f"stop takes at most {MAX_STOPS} texts"),
    ({"model": "m", "prompt": "a", "stop": [""]}, "stop", "stop needs a non-empty text"),
    ({"model": "m", "prompt": "a", "stop": 5}, "stop", "stop must be a text or a list of texts"),
    ({"model": "m", "prompt": "a", "unknown": "maybe"}, "unknown", "unknown must be one of error, skip, replace"),
    ({"model": "m", "prompt": "a" * 51}, "prompt", "this server takes at most 50"),
    ({"model": "m", "prompt": [1, 2]}, "prompt", "prompt must be a text or a non-empty list of texts"),
    ({"prompt": "a"}, "model", "model must be the name of a served model"),
    ({"model": "m", "prompt": "a", "stream_options": []}, "stream_options", "stream_options must be an object"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_each_bad_value_is_refused_naming_its_json_field(body, param, words):
    refused = refusal(body)
    assert (refused.status, refused.param) == (400, param)
    assert words in refused.message


def test_json_that_is_not_an_object_is_refused_without_a_field():
    refused = refusal([1, 2])
    assert (refused.status, refused.param, refused.message) == (400, None, "the request body must be a JSON object")


def test_echo_with_no_tokens_scores_the_prompt():
    request = parse_completion({"model": "m", "prompt": "a", "max_tokens": 0, "echo": True, "logprobs": 0}, LIMITS)
    assert (request.max_tokens, request.echo, request.logprobs) == (0, True, 0)


def test_the_chat_template_puts_each_message_on_its_line_and_opens_the_reply():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "ROMEO"}]
    assert chat_prompt(messages) == "system: Be brief.\nROMEO: Hi\nassistant: "


def test_a_chat_reply_ends_at_its_line_unless_asked_otherwise_and_takes_chats_logprobs():
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "logprobs": True, "top_logprobs": 2}
    request = parse_chat(body, LIMITS)
    assert (request.prompts, request.sample.stop, request.logprobs) == (("user: Hi\nassistant: ",), ("\n",), 2)
    assert parse_chat({**body, "stop": ["."]}, LIMITS).sample.stop == (".",)


@pytest.mark.parametrize("messages, words", [
    ([], "messages must be a non-empty list"),
    ([{"role": "robot", "content": "x"}], "messages[0] needs a role"),
    ([{"role": "user", "content": 5}], "messages[0].content must be a text"),
])
def test_bad_messages_are_refused_naming_messages(messages, words):
    refused = refusal({"model": "m", "messages": messages}, parse_chat)
    assert (refused.param, refused.message.startswith(words)) == ("messages", True)


def test_the_wire_offers_every_sampling_setting_but_greedy():
    assert {s.name for s in wire_settings()} == {s.name for s in dataclasses.fields(SampleConfig)} - {"greedy"}


NUMERIC_FIELDS = ["max_tokens", "n", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "logprobs",
                  "presence_penalty", "frequency_penalty"]


@pytest.mark.parametrize("field", NUMERIC_FIELDS)
@pytest.mark.parametrize("value", [-1, 0, 10**30, -1e308, "NaN", "1", [1], {"a": 1}])
def test_every_numeric_field_takes_or_refuses_each_hostile_value_naming_itself(field, value):
    try:
        parse_completion({"model": "m", "prompt": "a", field: value}, LIMITS)
    except RequestError as refused:
        assert (refused.status, refused.param) == (400, field)
        assert refused.message.startswith(field)
    else:
        assert isinstance(value, int) and value in (0, -1, 10**30), "only a number in range is taken"
