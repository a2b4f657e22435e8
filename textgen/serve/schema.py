"""The fields of a completion request on the wire, read from its JSON and checked once.

The sampling settings are SampleConfig's own fields (textgen/config.py), each under its JSON name
(OpenAI's where OpenAI has one: `length` is `max_tokens`, `num_samples` is `n`) and checked by
SampleConfig itself; OpenAI's other fields (prompt, stream, logprobs, echo, penalties) are read
here. Every problem is a RequestError naming the JSON field, which the app answers with a 400.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from textgen.config import (MAX_LOGPROBS, MAX_STOPS, WIRE_DEFAULTS, OptionError, SampleConfig, ServeConfig,
                            SettingError, sample_settings)

# SampleConfig fields whose JSON name is OpenAI's; the others are sent under their own names
# (top_k, repetition_penalty, unknown: what the openai client sends through extra_body).
JSON_NAMES = {"length": "max_tokens", "num_samples": "n"}
# Settings a request does not choose: greedy is temperature 0 on the wire.
NOT_ON_THE_WIRE = {"greedy"}
_TYPES = typing.get_type_hints(SampleConfig)


class RequestError(Exception):
    """A request the server refuses: `message` for the user, `param` the JSON field (or None),
    `status` the HTTP status, `kind` OpenAI's error type, `retry_after` seconds for a 503."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.kind, self.code = message, param, status, kind, code
        self.retry_after = retry_after

    def wire(self) -> dict[str, Any]:
        """The error object of OpenAI's shape, as a response's `error` or a stream's error event."""
        return {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}


def json_name(field: str) -> str:
    """A config field's name in a request's JSON."""
    return JSON_NAMES.get(field, field)


def from_setting_error(error: SettingError) -> RequestError:
    """A config's refusal worded with JSON field names."""
    param = json_name(error.field) if isinstance(error, OptionError) else (
        json_name(error.fields[0]) if error.fields else None)
    return RequestError(error.worded(json_name), param)


def wire_settings() -> list[dataclasses.Field]:
    """The sampling settings a request may give, by SampleConfig's fields."""
    return [setting for setting in sample_settings() if setting.name not in NOT_ON_THE_WIRE]


@dataclass(frozen=True)
class CompletionRequest:
    """One checked request: the prompts to complete and how."""

    model: str
    prompts: tuple[str, ...]
    sample: SampleConfig  # length is max_tokens (at least 1 here; see max_tokens)
    max_tokens: int
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None
    echo: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


def parse_completion(body: Any, limits: ServeConfig, *, prompts: tuple[str, ...] | None = None) -> CompletionRequest:
    """Check a /v1/completions body (or, given `prompts`, a chat body laid out already)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model must be the name of a served model (GET /v1/models lists them)", "model")
    if prompts is None:
        prompts = _prompts(body.get("prompt", ""))
    for prompt in prompts:
        if len(prompt) > limits.max_prompt:
            raise RequestError(f"the prompt has {len(prompt):,} characters; this server takes at most "
                               f"{limits.max_prompt:,}", "prompt")
    sample = _sample_config(body, limits)
    max_tokens = _typed(body, "max_tokens", int, WIRE_DEFAULTS["length"])
    echo = _typed(body, "echo", bool, False)
    if not (0 if echo else 1) <= max_tokens <= limits.max_tokens_limit:
        least = "0 (with echo, to score the prompt)" if echo else "1 (0 only with echo)"
        raise RequestError(f"max_tokens must be at least {least} and at most {limits.max_tokens_limit:,}, "
                           f"got {max_tokens}", "max_tokens")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError("stream_options must be an object such as {\"include_usage\": true}", "stream_options")
    return CompletionRequest(
        model=model, prompts=prompts, sample=sample, max_tokens=max_tokens,
        stream=_typed(body, "stream", bool, False),
        include_usage=_typed(options or {}, "include_usage", bool, False, "stream_options.include_usage"),
        logprobs=_logprobs(body), echo=echo,
        presence_penalty=_penalty(body, "presence_penalty"), frequency_penalty=_penalty(body, "frequency_penalty"))


def _sample_config(body: dict, limits: ServeConfig) -> SampleConfig:
    given: dict[str, Any] = {}
    for setting in wire_settings():
        name = json_name(setting.name)
        if body.get(name) is not None:
            given[setting.name] = _setting_value(setting, body[name])
    temperature = given.get("temperature", WIRE_DEFAULTS["temperature"])
    greedy = temperature == 0  # OpenAI's temperature 0: always the likeliest token
    values = {**{k: v for k, v in WIRE_DEFAULTS.items() if k != "length"}, **given, "greedy": greedy,
              "length": max(1, given.get("length", 1))}
    if greedy:
        values["temperature"] = 1.0  # unused, but the config checks it
    if len(values.get("stop", ())) > MAX_STOPS:
        raise RequestError(f"stop takes at most {MAX_STOPS} texts, got {len(values['stop']):,}", "stop")
    try:
        sample = SampleConfig(**values)
    except SettingError as error:
        raise from_setting_error(error) from None
    if sample.num_samples > limits.max_batch:
        raise RequestError(f"n must be at most {limits.max_batch} on this server (its batch), got "
                           f"{sample.num_samples:,}", "n")
    return sample


def _setting_value(setting: dataclasses.Field, value: Any) -> Any:
    """`value` as the type SampleConfig declares for `setting`, or a RequestError naming it."""
    kind, name = _TYPES[setting.name], json_name(setting.name)
    if typing.get_origin(kind) is tuple:  # stop: one text or a list of texts
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(text, str) for text in value):
            return tuple(value)
        raise RequestError(f"{name} must be a text or a list of texts", name)
    wanted = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # int | None -> int
    return _checked_type(value, wanted, name)


def _checked_type(value: Any, wanted: type, name: str) -> Any:
    # JSON's true is not the number 1, and a number in a string is not a number.
    if wanted is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise RequestError(f"{name} must be a finite number", name)
        return float(value)
    if isinstance(value, wanted) and (wanted is bool or not isinstance(value, bool)):
        return value
    words = {int: "a whole number", float: "a number", bool: "true or false", str: "a text"}
    raise RequestError(f"{name} must be {words.get(wanted, wanted.__name__)}, got {value!r:.40}", name)


def _typed(body: dict, name: str, wanted: type, default: Any, param: str | None = None) -> Any:
    value = body.get(name)
    return default if value is None else _checked_type(value, wanted, param or name)


def _prompts(prompt: Any) -> tuple[str, ...]:
    if isinstance(prompt, str):
        return (prompt,)
    if isinstance(prompt, list) and prompt and all(isinstance(text, str) for text in prompt):
        return tuple(prompt)
    raise RequestError("prompt must be a text or a non-empty list of texts (token ids are not taken)", "prompt")


def _logprobs(body: dict) -> int | None:
    logprobs = body.get("logprobs")
    if logprobs is None:
        return None
    logprobs = _checked_type(logprobs, int, "logprobs")
    if not 0 <= logprobs <= MAX_LOGPROBS:
        raise RequestError(f"logprobs must be between 0 and {MAX_LOGPROBS}, got {logprobs}", "logprobs")
    return logprobs


def _penalty(body: dict, name: str) -> float:
    value = _typed(body, name, float, 0.0)
    if not -2.0 <= value <= 2.0:
        raise RequestError(f"{name} must be between -2 and 2, got {value}", name)
    return value


# --- chat --------------------------------------------------------------------------------------

CHAT_ROLES = ("system", "user", "assistant")
ASSISTANT = "assistant"


def chat_prompt(messages: Any) -> str:
    """The messages laid out as one text, the chat template: each message on its own line as
    "NAME: content" (NAME its `name` if given, else its role), then "assistant: " for the reply.
    A model trained on plain text has never seen roles; one trained on dialogue lines
    ("ROMEO: ...") reads the conversation in the form it learnt, given the speakers as names."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {\"role\", \"content\"} objects", "messages")
    lines = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            raise RequestError(f"messages[{index}] needs a role, one of {', '.join(CHAT_ROLES)}", "messages")
        content = message.get("content")
        if not isinstance(content, str):
            raise RequestError(f"messages[{index}].content must be a text", "messages")
        name = message.get("name") or message["role"]
        if not isinstance(name, str):
            raise RequestError(f"messages[{index}].name must be a text", "messages")
        lines.append(f"{name}: {content}\n")
    return "".join(lines) + f"{ASSISTANT}: "


def parse_chat(body: Any, limits: ServeConfig) -> CompletionRequest:
    """Check a /v1/chat/completions body: the messages become one prompt, chat's logprobs
    (true, with top_logprobs alternatives) become the completion's, and the reply ends at the
    end of its line unless the request gives its own stop."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    prompt = chat_prompt(body.get("messages"))
    wanted = _typed(body, "logprobs", bool, False)
    top = _typed(body, "top_logprobs", int, 0)
    if not 0 <= top <= MAX_LOGPROBS:
        raise RequestError(f"top_logprobs must be between 0 and {MAX_LOGPROBS}, got {top}", "top_logprobs")
    completion = {key: value for key, value in body.items() if key not in ("logprobs", "echo", "prompt")}
    if completion.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
        completion["max_tokens"] = body["max_completion_tokens"]
    if completion.get("stop") is None:
        completion["stop"] = "\n"
    request = parse_completion(completion, limits, prompts=(prompt,))
    return dataclasses.replace(request, logprobs=top if wanted else None)
