"""One bounded HTTP GET of a trainer pod's Prometheus endpoint.

The operator's only outbound fetch. Its target is never a URL: an IP literal and a port that
the scraper read from the API (the master pod's podIP and its container port named
`metrics`), always plain `http`, path `/metrics`, no redirects. The response is capped at
`max_bytes` and the whole exchange (connect, request, status line, headers, body) shares one
deadline, so a slow or endless endpoint costs at most `timeout` seconds and `max_bytes` of
memory.

Why the socket I/O is ours: urllib opens any scheme it is handed (file://) and follows
redirects, and http.client gives every socket read the full timeout, so an endpoint that
drips one header byte per read holds a handler thread for hours. Here each read gets only
what is left of the deadline; http.client still parses the response (status, headers,
chunked encoding).
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import time

PATH = "/metrics"
CHUNK = 64 * 1024
HEADER_ALLOWANCE = 64 * 1024  # status line and headers, on top of the body's cap


class FetchError(Exception):
    """A failed scrape. Its message is one of our fixed phrases, never text that came from
    the network (a body, a header, a reason phrase): it may end up in a log line."""


def fetch(host: str, port: int, *, timeout: float, max_bytes: int) -> bytes:
    """The body of GET http://host:port/metrics; FetchError unless it is a complete 200
    response within `timeout` seconds and `max_bytes` bytes of body."""
    try:
        address = ipaddress.ip_address(host)  # an IP literal: nothing is resolved
    except ValueError:
        raise FetchError("not an IP address") from None
    if not 0 < port < 65536:
        raise FetchError("not a port number")
    deadline = time.monotonic() + timeout
    try:
        raw = _exchange(address, port, deadline=deadline, limit=max_bytes + HEADER_ALLOWANCE)
    except (socket.timeout, TimeoutError):
        raise FetchError("timed out") from None
    except ConnectionRefusedError:
        raise FetchError("connection refused") from None
    except OSError as error:
        raise FetchError(f"connection failed ({type(error).__name__})") from None
    return _body(raw, max_bytes=max_bytes)


def _exchange(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, *,
              deadline: float, limit: int) -> bytes:
    """Send the request; every byte of the answer until the peer closes, or FetchError."""
    host = f"[{address}]" if address.version == 6 else str(address)
    request = (f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
               "Accept: text/plain;version=0.0.4\r\nUser-Agent: speechtune-operator\r\n\r\n").encode()
    with socket.create_connection((str(address), port), timeout=_remaining(deadline)) as sock:
        sock.settimeout(_remaining(deadline))
        sock.sendall(request)
        received = bytearray()
        while True:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(CHUNK)
            if not chunk:
                return bytes(received)
            received += chunk
            if len(received) > limit:
                raise FetchError(f"response over {limit} bytes")


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError("timed out")
    return remaining


class _Received:
    """The already received bytes, shaped like the socket http.client reads a response from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


def _body(raw: bytes, *, max_bytes: int) -> bytes:
    response = http.client.HTTPResponse(_Received(raw))  # type: ignore[arg-type]
    try:
        response.begin()
        if response.status != 200:
            raise FetchError(f"HTTP status {int(response.status)}")
        body = response.read()
    except http.client.HTTPException as error:  # malformed, or cut short by the peer
        raise FetchError(f"malformed response ({type(error).__name__})") from None
    if len(body) > max_bytes:
        raise FetchError(f"body over {max_bytes} bytes")
    return body
