"""Tests for textgen.data.corpus: reading files, the named corpora, the split and the download cache."""

from __future__ import annotations

import hashlib
import http.server
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textgen import config
from textgen.cli.app import flag_for
from textgen.data.corpus import (
    KNOWN_CORPORA,
    corpus_cache_dir,
    fetch_corpus,
    load_corpus,
    read_text_file,
)
from textgen.data import split_text
from textgen.errors import TextgenError

SHARED_SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_CHARS = 1_115_394


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the real ~/.cache, any mirror override and any proxy out of every test."""
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TEXTGEN_SHAKESPEARE_URL", raising=False)
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- plain files -------------------------------------------------------------------------------


def test_plain_file_loads_with_its_provenance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "poem.txt", "Shall I compare thee\nto a summer's day?\n".encode())
    corpus = load_corpus("poem.txt")
    assert corpus.text == "Shall I compare thee\nto a summer's day?\n"
    assert corpus.source == "poem.txt"
    assert corpus.name is None
    assert corpus.path == tmp_path / "poem.txt"
    assert corpus.path.is_absolute()
    assert corpus.sha256 == hashlib.sha256(corpus.text.encode("utf-8")).hexdigest()


def test_newlines_are_kept_exactly_as_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.txt", b"one\r\ntwo\rthree\n")
    assert read_text_file(path) == "one\r\ntwo\rthree\n"


def test_leading_utf8_bom_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbfcaf\xc3\xa9\n")
    assert read_text_file(path) == "café\n"


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.txt"
    with pytest.raises(TextgenError, match=r"^no such file: .*absent\.txt$"):
        read_text_file(path)


def test_directory_is_rejected_as_not_a_text_file(tmp_path: Path) -> None:
    with pytest.raises(TextgenError, match=r"is a directory, not a text file$"):
        read_text_file(tmp_path)


def test_unreadable_file_reports_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Faked, because the tests may run as root, who can read a chmod 000 file.
    path = write(tmp_path / "secret.txt", b"text")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(TextgenError, match=r"^cannot read .*secret\.txt: permission denied$"):
        read_text_file(path)


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n", b"\xef\xbb\xbf\n"], ids=["empty", "whitespace", "bom-only"])
def test_file_without_text_is_rejected_as_empty(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path / "blank.txt", data)
    with pytest.raises(TextgenError, match=r"blank\.txt is empty$"):
        read_text_file(path)


def test_binary_file_reports_the_first_nul_offset(tmp_path: Path) -> None:
    path = write(tmp_path / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(TextgenError, match=r"image\.png looks binary \(NUL byte at offset 8\)$"):
        read_text_file(path)


def test_latin1_bytes_report_the_bad_byte_and_its_offset(tmp_path: Path) -> None:
    path = write(tmp_path / "latin.txt", "naïve café\n".encode("latin-1"))
    with pytest.raises(TextgenError) as raised:
        read_text_file(path)
    assert str(raised.value) == (
        f"{path} is not valid UTF-8: bad byte 0xef at byte offset 2; pass encoding if it uses another encoding"
    )
    assert raised.value.worded(flag_for).endswith("; pass --encoding if it uses another encoding")


def test_latin1_file_reads_when_its_encoding_is_given(tmp_path: Path) -> None:
    path = write(tmp_path / "latin.txt", "naïve café\n".encode("latin-1"))
    assert load_corpus(str(path), encoding="latin-1").text == "naïve café\n"


def test_utf16_file_with_its_encoding_is_not_taken_for_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "wide.txt", "hello, world\n".encode("utf-16"))
    assert read_text_file(path, encoding="utf-16") == "hello, world\n"


@pytest.mark.parametrize("encoding", ["klingon-8", "hex"])
def test_unknown_or_non_text_encoding_is_rejected(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path / "a.txt", b"text")
    with pytest.raises(TextgenError, match=rf"^unknown encoding: {encoding}$"):
        read_text_file(path, encoding=encoding)


# --- named corpora -----------------------------------------------------------------------------


def test_python_docs_is_the_default_and_is_large_and_deterministic() -> None:
    first = load_corpus(None)
    second = load_corpus("python-docs")
    assert config.DEFAULT_CORPUS == "python-docs"
    assert (first.name, first.source, first.path) == ("python-docs", "python-docs", None)
    assert len(first.text.encode("utf-8")) > 300_000
    assert first.text == second.text
    assert first.sha256 == second.sha256 == hashlib.sha256(first.text.encode("utf-8")).hexdigest()


def test_python_docs_without_pydoc_data_suggests_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)  # makes the import fail
    with pytest.raises(TextgenError, match=r"pydoc_data.*pass a text file instead"):
        load_corpus("python-docs")


def test_existing_path_wins_over_a_corpus_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "shakespeare", b"my own shakespeare\n")
    corpus = load_corpus("shakespeare")
    assert corpus.text == "my own shakespeare\n"
    assert corpus.name is None
    assert corpus.path == tmp_path / "shakespeare"


def test_unknown_name_lists_the_known_corpora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TextgenError) as raised:
        load_corpus("wikipedia")
    assert str(raised.value) == "no such file or known corpus: wikipedia (known corpora: python-docs, shakespeare)"


def test_registry_describes_every_corpus() -> None:
    assert set(KNOWN_CORPORA) == {"python-docs", "shakespeare"}
    assert KNOWN_CORPORA["python-docs"].url is None
    assert KNOWN_CORPORA["shakespeare"].sha256 == SHAKESPEARE_SHA256
    assert KNOWN_CORPORA["shakespeare"].size == SHAKESPEARE_CHARS


# --- the split ---------------------------------------------------------------------------------


def test_split_matches_nanogpt_on_tinyshakespeare_length() -> None:
    train, val = split_text("x" * SHAKESPEARE_CHARS, 0.1)
    assert (len(train), len(val)) == (1_003_854, 111_540)


def test_split_keeps_the_first_characters_for_training() -> None:
    assert split_text("abcdefghij", 0.2) == ("abcdefgh", "ij")
    assert split_text("abcdefghij", 0.5) == ("abcde", "fghij")


def test_split_with_zero_fraction_keeps_everything_for_training() -> None:
    assert split_text("text", 0.0) == ("text", "")


@pytest.mark.parametrize("fraction", [-0.1, 0.51, 1.0, float("nan")])
def test_split_rejects_fraction_outside_zero_to_half(fraction: float) -> None:
    with pytest.raises(TextgenError, match="between 0 and 0.5"):
        split_text("text", fraction)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(text=st.text(max_size=300), fraction=st.floats(min_value=0.0, max_value=0.5))
def test_split_parts_rejoin_and_validation_share_is_within_one_character(text: str, fraction: float) -> None:
    train, val = split_text(text, fraction)
    assert train + val == text
    assert len(text) * fraction - 1 < len(val) <= len(text) * fraction + 1


# --- the cache folder --------------------------------------------------------------------------


def test_cache_dir_prefers_textgen_then_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert corpus_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("TEXTGEN_CACHE_DIR")
    assert corpus_cache_dir() == tmp_path / "xdg" / "textgen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert corpus_cache_dir() == tmp_path / "home" / ".cache" / "textgen"


# --- downloading -------------------------------------------------------------------------------


class Served:
    """What a test server sends, and how often it was asked."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests = 0
        self.url = ""


@pytest.fixture
def serve() -> Iterator[Callable[[bytes], Served]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(body: bytes) -> Served:
        served = Served(body)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests += 1
                if self.path != "/input.txt":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(served.body)))
                self.end_headers()
                self.wfile.write(served.body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep pytest's output free of access logs

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps shutdown() from costing half a second per test.
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        servers.append(server)
        served.url = f"http://127.0.0.1:{server.server_address[1]}/input.txt"
        return served

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def shakespeare_bytes() -> bytes:
    if not SHARED_SHAKESPEARE.is_file():
        pytest.skip(f"shared corpus not found at {SHARED_SHAKESPEARE}")
    return SHARED_SHAKESPEARE.read_bytes()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/input.txt"


def test_first_load_downloads_and_caches_verified_file(
    tmp_path: Path, serve: Callable[[bytes], Served], shakespeare_bytes: bytes
) -> None:
    served = serve(shakespeare_bytes)
    cached = fetch_corpus("shakespeare", url=served.url, cache_dir=tmp_path)
    assert cached == tmp_path / "corpora" / "shakespeare.txt"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == SHAKESPEARE_SHA256
    assert served.requests == 1
    assert [p.name for p in cached.parent.iterdir()] == ["shakespeare.txt"]  # no temporary left over


def test_env_url_is_honoured_and_second_load_makes_no_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Callable[[bytes], Served], shakespeare_bytes: bytes
) -> None:
    served = serve(shakespeare_bytes)
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TEXTGEN_SHAKESPEARE_URL", served.url)
    first = load_corpus("shakespeare")
    second = load_corpus("shakespeare")
    assert served.requests == 1
    assert (first.name, first.source) == ("shakespeare", "shakespeare")
    assert first.path == second.path == tmp_path / "corpora" / "shakespeare.txt"
    assert len(first.text) == SHAKESPEARE_CHARS
    assert first.sha256 == second.sha256 == SHAKESPEARE_SHA256  # ASCII: text hash equals file hash
    train, val = split_text(first.text, 0.1)
    assert (len(train), len(val)) == (1_003_854, 111_540)


def test_wrong_hash_download_is_rejected_and_leaves_nothing(
    tmp_path: Path, serve: Callable[[bytes], Served]
) -> None:
    served = serve(b"First Citizen:\nThis is not the file you want.\n")
    target = tmp_path / "corpora" / "shakespeare.txt"
    with pytest.raises(TextgenError) as raised:
        fetch_corpus("shakespeare", url=served.url, cache_dir=tmp_path)
    message = str(raised.value)
    assert "SHA-256" in message and SHAKESPEARE_SHA256 in message
    assert message.endswith(f"download it yourself and save it as {target}")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_oversized_download_is_cut_off_and_leaves_nothing(
    tmp_path: Path, serve: Callable[[bytes], Served]
) -> None:
    served = serve(b"x" * (SHAKESPEARE_CHARS + 1))
    with pytest.raises(TextgenError, match="more than the expected 1,115,394 bytes"):
        fetch_corpus("shakespeare", url=served.url, cache_dir=tmp_path)
    assert list((tmp_path / "corpora").iterdir()) == []


def test_server_down_names_the_url_and_the_cache_path(tmp_path: Path) -> None:
    url = closed_port_url()
    target = tmp_path / "corpora" / "shakespeare.txt"
    with pytest.raises(TextgenError) as raised:
        fetch_corpus("shakespeare", url=url, cache_dir=tmp_path)
    message = str(raised.value)
    assert message.startswith(f"could not download shakespeare from {url} (")
    assert "\n" not in message
    assert message.endswith(f"; download it yourself and save it as {target}")
    assert not target.exists()


def test_http_error_is_reported_with_its_status(tmp_path: Path, serve: Callable[[bytes], Served]) -> None:
    served = serve(b"")
    with pytest.raises(TextgenError, match=r"\(HTTP 404 Not Found\)"):
        fetch_corpus("shakespeare", url=served.url.replace("input.txt", "missing.txt"), cache_dir=tmp_path)


def test_silent_server_times_out(tmp_path: Path) -> None:
    # The kernel completes the handshake from the backlog, but nobody ever answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/input.txt"
        with pytest.raises(TextgenError, match=r"\(timed out after 0\.2 s\)"):
            fetch_corpus("shakespeare", url=url, cache_dir=tmp_path, timeout=0.2)
    assert list((tmp_path / "corpora").iterdir()) == []


def test_file_placed_by_hand_is_used_without_network(tmp_path: Path, shakespeare_bytes: bytes) -> None:
    target = tmp_path / "corpora" / "shakespeare.txt"
    target.parent.mkdir()
    target.write_bytes(shakespeare_bytes)
    assert fetch_corpus("shakespeare", url=closed_port_url(), cache_dir=tmp_path) == target


def test_tampered_cache_is_reported_with_advice_to_delete(tmp_path: Path, shakespeare_bytes: bytes) -> None:
    target = tmp_path / "cache" / "corpora" / "shakespeare.txt"  # the autouse TEXTGEN_CACHE_DIR
    target.parent.mkdir(parents=True)
    target.write_bytes(shakespeare_bytes.replace(b"Citizen", b"Netizen"))
    with pytest.raises(TextgenError, match=r"cached shakespeare at .*shakespeare\.txt .*delete it"):
        load_corpus("shakespeare")


def test_built_in_corpus_cannot_be_fetched(tmp_path: Path) -> None:
    with pytest.raises(TextgenError, match="built into textgen"):
        fetch_corpus("python-docs", cache_dir=tmp_path)
