"""The operator's one outbound fetch against hostile endpoints: real sockets on loopback, each
server misbehaving in one way. Every failure is a FetchError with a phrase of ours (never a
word the server sent), within the deadline and the byte cap."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import traceback
from typing import Callable, Iterator

import prometheus_client
import pytest

from speechtune_operator.client import fetching

SECRET = "eyJhbGciOi-not-a-real-token-4242"
Serve = Callable[[socket.socket], None]


@contextlib.contextmanager
def server(serve: Serve) -> Iterator[int]:
    """A one-connection-at-a-time TCP server on 127.0.0.1 running `serve` per connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                with contextlib.suppress(OSError):
                    conn.recv(4096)  # the request
                    serve(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def reply(text: bytes) -> Serve:
    return lambda conn: conn.sendall(text)


def endless(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    line = b"speechtune_step 1\n" * 4096
    while True:
        conn.sendall(line)


def drip(conn: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
        conn.sendall(bytes([byte]))
        time.sleep(0.05)


def silent(conn: socket.socket) -> None:
    time.sleep(5)


def fetch(port: int, *, timeout: float = 1.0, max_bytes: int = 1 << 20) -> bytes:
    return fetching.fetch("127.0.0.1", port, timeout=timeout, max_bytes=max_bytes)


def test_reads_a_real_prometheus_endpoint() -> None:
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Gauge("speechtune_step", "step", registry=registry).set(7)
    httpd, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        body = fetch(httpd.server_port)
    finally:
        httpd.shutdown()
        thread.join()
    assert b"speechtune_step 7.0" in body


def test_chunked_body_is_decoded() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    with server(reply(chunked)) as port:
        assert fetch(port) == b"hello"


@pytest.mark.parametrize(("serve", "phrase"), [
    (endless, "over"),
    (reply(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n" + SECRET.encode()), "malformed response"),
    (reply(b"HTTP/1.1 302 Found\r\nLocation: file:///var/run/secrets/token\r\n\r\n"), "HTTP status 302"),
    (reply(b"HTTP/1.1 500 " + SECRET.encode() + b"\r\n\r\n" + SECRET.encode()), "HTTP status 500"),
    (reply(SECRET.encode() + b"\r\n\r\n"), "malformed response"),
    (reply(b""), "malformed response"),
    (drip, "timed out"),
    (silent, "timed out"),
], ids=["endless-body", "short-body", "redirect-to-file", "error-status", "not-http", "empty", "drip-headers",
        "silent"])
def test_hostile_endpoints_fail_with_our_words_within_the_deadline(serve: Serve, phrase: str) -> None:
    with server(serve) as port:
        started = time.monotonic()
        with pytest.raises(fetching.FetchError, match=phrase) as raised:
            fetch(port, timeout=1.0, max_bytes=256 * 1024)
        elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"took {elapsed:.1f}s with a 1 s deadline"
    # Not in the message, nor in the traceback a logger would print with it.
    assert SECRET not in "".join(traceback.format_exception(raised.value))


def test_the_cap_counts_the_body_not_just_a_declared_length() -> None:
    body = b"x" * 5000
    with server(reply(b"HTTP/1.1 200 OK\r\n\r\n" + body)) as port:
        assert fetch(port, max_bytes=5000) == body
        with pytest.raises(fetching.FetchError, match="body over 4999 bytes"):
            fetch(port, max_bytes=4999)


@pytest.mark.parametrize("host", ["localhost", "metadata.google.internal", "file:///etc/passwd",
                                  "127.0.0.1:9400", "http://127.0.0.1", ""])
def test_only_an_ip_literal_is_a_host(host: str) -> None:
    with pytest.raises(fetching.FetchError, match="not an IP address"):
        fetching.fetch(host, 9400, timeout=1.0, max_bytes=1024)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_port_range(port: int) -> None:
    with pytest.raises(fetching.FetchError, match="not a port number"):
        fetching.fetch("127.0.0.1", port, timeout=1.0, max_bytes=1024)


def test_refused_connection() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with pytest.raises(fetching.FetchError, match="connection refused"):
        fetch(port)
