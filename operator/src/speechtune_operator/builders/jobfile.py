"""The job file the trainer reads at /etc/speechtune/job.yaml, and how it reaches the pod.

It travels inside the PyTorchJob: an annotation on the pod template, which the kubelet
writes into the pod through a downwardAPI volume. No ConfigMap per job: one API write
fewer before each child, and nothing to create, find or collect besides the PyTorchJob.
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml  # type: ignore[import-untyped, unused-ignore]  # no stubs in the slim image

from speechtune_operator import names

# libyaml's emitter writes the same text as PyYAML's pure-Python one, ~4x faster (8 ms per
# job on the shared dev box otherwise, on the creation path of every FinetuneJob).
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# The apiserver refuses a pod (and the training-operator then its every retry) whose
# annotations, keys plus values, exceed 256 KiB (apimachinery's TotalAnnotationSizeLimitB,
# checked on the local control plane: 262144 bytes in all pass, one more is refused).
# 16 KiB stay free for the template's other annotations and for admission controllers'.
ANNOTATIONS_LIMIT = 256 * 1024
MAX_BYTES = ANNOTATIONS_LIMIT - 16 * 1024 - len(names.ANNOTATION_JOB_FILE)


class JobFileTooLarge(ValueError):
    """A spec whose job file cannot travel in a pod annotation."""


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


def job_file(body: Mapping[str, Any]) -> str:
    text: str = yaml.dump(job_document(body), Dumper=_DUMPER, sort_keys=False, allow_unicode=True)
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        raise JobFileTooLarge(
            f"spec: the job file is {size / 1024:.0f} KiB; at most {MAX_BYTES / 1024:.0f} KiB fit in the pod "
            "annotation that carries it (shorten spec.training.overrides or other long fields)")
    return text


def volume() -> dict[str, Any]:
    """The pod volume holding job.yaml, projected from the pod's own annotation."""
    return {"name": "job", "downwardAPI": {"items": [{
        "path": names.JOB_FILE_NAME,
        "fieldRef": {"fieldPath": f"metadata.annotations['{names.ANNOTATION_JOB_FILE}']"},
    }]}}


def _plain(value: Any) -> Any:
    # kopf hands out read-only mapping views; yaml.safe_dump needs plain dicts and lists.
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
