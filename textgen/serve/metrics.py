"""The server's measurements in Prometheus's terms: one ServeMetrics object that the engine and the
HTTP layer both update, in a registry of its own (two servers in one process never share counts),
rendered as the Prometheus text format for GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: a first token comes after a prompt is primed (milliseconds to seconds); a next token
# after one step of the batch (tens of microseconds to tens of milliseconds).
_FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_TOKEN_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class ServeMetrics:
    """Counters, gauges and histograms of one server. The HTTP layer counts `requests`; the engine
    updates the rest."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("textgen_requests", "HTTP requests by route and status.",
                                ["route", "status"], registry=registry)
        self.tokens_generated = Counter("textgen_tokens_generated", "Tokens drawn for completions.",
                                        ["model"], registry=registry)
        self.queue_depth = Gauge("textgen_queue_depth", "Requests waiting for room in the batch.",
                                 registry=registry)
        self.batch_rows = Gauge("textgen_batch_rows", "Rows the engine steps together (one per choice or prompt).",
                                registry=registry)
        self.time_to_first_token = Histogram(
            "textgen_time_to_first_token_seconds", "From submission to a request's first drawn token.",
            buckets=_FIRST_TOKEN_BUCKETS, registry=registry)
        self.token_latency = Histogram(
            "textgen_token_latency_seconds", "Time of one step of the batch: the wait between two tokens of a row.",
            buckets=_TOKEN_BUCKETS, registry=registry)
        self.cache_hits = Counter("textgen_state_cache_hits", "Prompts primed from a cached state.",
                                  registry=registry)
        self.cache_misses = Counter("textgen_state_cache_misses", "Prompts primed from the start.",
                                    registry=registry)

    def render(self) -> bytes:
        """Every metric in the Prometheus text format (serve it with `content_type`)."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value by its exposed name (e.g. textgen_batch_rows), 0.0 if absent."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found
