"""One HTTP GET of a Prometheus text endpoint."""

from __future__ import annotations

import urllib.request


def fetch(url: str, *, timeout: float) -> str:
    request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, from settings
        return str(response.read().decode("utf-8"))
