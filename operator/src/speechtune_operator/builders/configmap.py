"""The ConfigMap holding the job file the trainer reads at /etc/speechtune/job.yaml."""

from __future__ import annotations

from typing import Any, Mapping

import yaml  # type: ignore[import-untyped, unused-ignore]  # no stubs in the slim image

from speechtune_operator import names


def job_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """The whole FinetuneJob as the trainer sees it: the same shape `speechtune run` reads,
    with the apiserver's defaults already applied to the spec."""
    meta = body["metadata"]
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": _plain(body["spec"]),
    }


def build_configmap(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    text = yaml.safe_dump(job_document(body), sort_keys=False, allow_unicode=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.configmap_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": names.child_labels(body),
        },
        "data": {names.JOB_FILE_NAME: text},
    }


def _plain(value: Any) -> Any:
    # kopf hands out read-only mapping views; yaml.safe_dump needs plain dicts and lists.
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
