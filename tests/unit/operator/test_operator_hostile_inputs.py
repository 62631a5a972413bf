"""Hostile FinetuneJobs on the operator's side, one table: what a user may write with kubectl
that the CRD's schema and CEL rules accept (checked with the trainer's validator, which runs
the same CRD), and what the operator then does. Each case must end in exactly one of:

- refused: a policy refusal with a fixed reason and a one-line message naming the field
  (never echoing the value), and no child built;
- contained: children are built, but the hostile part has no effect beyond the job itself
  (no fetch target, no token for a foreign image, no system priority, DNS-valid names).

Never a traceback, never an accepted privilege. The fetch-side cases (hostile endpoints and
decoy pods) live in test_operator_fetching.py / test_operator_scraping.py, handler failures in
test_operator_guarding.py; `CASES` here plus those make the operator's share of the
hostile-input suite.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable

import pytest

import ftj_crd as crdtools
from speechtune import spec as trainer_spec  # the CRD's schema + CEL, as the apiserver applies them
from speechtune_operator import settings
from speechtune_operator.builders import admission, backends, jobfile, networkpolicy

POLICY = settings.Settings(allowed_image_prefixes=("registry.example.com/asr/",), trainer_network_policy=True,
                           operator_namespace="speechtune-system", prometheus_namespaces=("monitoring",))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
Edit = Callable[[dict[str, Any]], None]


def put(path: str, value: Any) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        node = body
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return edit


# (id, edit, expected): "refused:<Reason>:<field>" or "contained".
CASES: list[tuple[str, Edit, str]] = [
    ("image-foreign-registry", put("spec.image", "docker.io/attacker/miner:latest"), "refused:ImageNotAllowed:spec.image"),
    ("image-short-name", put("spec.image", "ubuntu"), "refused:ImageNotAllowed:spec.image"),
    ("image-lookalike-prefix", put("spec.image", "registry.example.com/asr-evil/x:1"), "refused:ImageNotAllowed:spec.image"),
    ("image-prefix-as-path", put("spec.image", "evil.example/registry.example.com/asr/x:1"),
     "refused:ImageNotAllowed:spec.image"),
    ("image-engine-repo-other-tag", put("spec.image", "ghcr.io/speechtune/speechtune-speechbrain:latest"),
     "refused:ImageNotAllowed:spec.image"),
    ("image-engine-repo-digest", put("spec.image", "ghcr.io/speechtune/speechtune-speechbrain@sha256:" + "e" * 64),
     "refused:ImageNotAllowed:spec.image"),
    ("image-no-registry-port-trick", put("spec.image", "registry.example.com:443/asr/x:1"),
     "refused:ImageNotAllowed:spec.image"),
    ("priority-system-node", put("spec.resources.priorityClassName", "system-node-critical"),
     "refused:PriorityClassNotAllowed:spec.resources.priorityClassName"),
    ("priority-system-cluster", put("spec.resources.priorityClassName", "system-cluster-critical"),
     "refused:PriorityClassNotAllowed:spec.resources.priorityClassName"),
    ("priority-system-custom", put("spec.resources.priorityClassName", "system-x"),
     "refused:PriorityClassNotAllowed:spec.resources.priorityClassName"),
    ("annotation-metrics-url-file", put("metadata.annotations", {
        "speechtune.dev/metrics-url": "file:///var/run/secrets/kubernetes.io/serviceaccount/token"}), "contained"),
    ("annotation-metrics-url-metadata", put("metadata.annotations", {
        "speechtune.dev/metrics-url": "http://169.254.169.254/latest/meta-data/"}), "contained"),
    ("annotation-prometheus-port", put("metadata.annotations", {
        "prometheus.io/port": "10250", "prometheus.io/path": "/../../etc/shadow"}), "contained"),
    ("label-spoofs-another-job", put("metadata.labels", {"speechtune.dev/finetunejob": "someone-elses-job"}),
     "contained"),
    ("overrides-carry-urls", put("spec.training.overrides", {"metrics_url": "file:///dev/zero",
                                                             "scrape_url": "http://10.0.0.1:2379/"}), "contained"),
    ("pretrained-is-a-url", put("spec.model", {"pretrained": "file:///var/run/secrets/kubernetes.io/token"}),
     "contained"),
    ("node-selector-control-plane", put("spec.resources.nodeSelector", {"node-role.kubernetes.io/control-plane": ""}),
     "contained"),
    ("tolerate-everything", put("spec.resources.tolerations", [{"operator": "Exists"}]), "contained"),
    ("longest-name", put("metadata.name", "a" * 48), "contained"),
]


def hostile(edit: Edit) -> dict[str, Any]:
    body = copy.deepcopy(crdtools.stored("speechbrain-atc0"))
    edit(body)
    return body


def crd_accepts(body: dict[str, Any]) -> bool:
    document = {k: v for k, v in body.items() if k != "status"}
    document["metadata"] = {k: v for k, v in body["metadata"].items() if k in ("name", "namespace")}
    try:
        trainer_spec.validate(document, source="kubectl")
    except trainer_spec.SpecError:
        return False
    return True


@pytest.mark.parametrize(("edit", "expected"), [(edit, expected) for _, edit, expected in CASES],
                         ids=[case_id for case_id, _, _ in CASES])
def test_hostile_job(edit: Edit, expected: str) -> None:
    body = hostile(edit)
    # The CRD lets these through (else the apiserver's own error names the field): the
    # operator is the last line.
    assert crd_accepts(body), "the CRD already refuses this; the case belongs to the schema tests"
    refused = admission.refusal(body["spec"], POLICY)
    if expected.startswith("refused:"):
        _, reason, field = expected.split(":")
        assert refused is not None, "silently accepted"
        assert refused.reason == reason
        assert refused.message.startswith(f"{field}: ") and "\n" not in refused.message
        written = str(body["spec"].get("image") or body["spec"]["resources"].get("priorityClassName"))
        assert written not in refused.message
        return
    assert refused is None
    contained(body)


def contained(body: dict[str, Any]) -> None:
    """Children build, and the job's hostile parts reach nothing beyond the job."""
    for backend in backends.BACKENDS.values():
        child = backend.build(body, POLICY)
        text = str(child)
        assert "metrics-url" not in text and "169.254.169.254" not in text.replace(
            str(body["spec"].get("training", {}).get("overrides")), "")
        assert DNS_LABEL.match(child["metadata"]["name"]) and len(child["metadata"]["name"]) <= 63
    # The job file carries name, namespace and spec only: no annotations, no labels.
    assert set(jobfile.job_document(body)["metadata"]) <= {"name", "namespace"}
    policy = networkpolicy.build_networkpolicy(body, POLICY)
    assert len(policy["metadata"]["name"]) <= 253 and DNS_LABEL.match(policy["metadata"]["name"])
    # Fenced by the job's own name, never by a label the user wrote on the FinetuneJob.
    assert policy["spec"]["podSelector"]["matchLabels"] == {"speechtune.dev/finetunejob": body["metadata"]["name"]}
    assert all(rule.get("from") for rule in policy["spec"]["ingress"])


def test_case_ids_are_distinct() -> None:
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)
