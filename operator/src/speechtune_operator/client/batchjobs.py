"""Create-or-get of the model initializer's batch/v1 Job (through Clients' plain calls: the
typed BatchV1Api would cost its generated module's memory for two calls)."""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote

from speechtune_operator.client import api


def create_or_get(clients: api.Clients, job: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The Job as stored, and whether this call created it (409: an earlier run made it)."""
    meta = job["metadata"]
    collection = f"/apis/batch/v1/namespaces/{quote(meta['namespace'])}/jobs"
    try:
        return api.post(clients, collection, job), True
    except Exception as error:
        if not api.is_status(error, 409):
            raise
    return clients.get(f"{collection}/{quote(meta['name'])}"), False
