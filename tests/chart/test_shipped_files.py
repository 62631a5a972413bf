"""Every YAML and JSON file the chart ships loads, and says what the product promises.

Pure file checks (no helm, no cluster): values against values.schema.json, the CRD copy
against crds/, and the Grafana dashboards' shape (stable uids, a Prometheus data-source
variable, per-job panels on the metric names of ARCHITECTURE.md).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "speechtune"
DASHBOARDS = CHART / "dashboards"

# The metric contract (ARCHITECTURE.md): what trainers and the operator export.
TRAINER_METRICS = {
    "speechtune_train_loss", "speechtune_val_loss", "speechtune_val_wer_ratio", "speechtune_val_cer_ratio",
    "speechtune_learning_rate", "speechtune_step", "speechtune_max_steps", "speechtune_epoch",
    "speechtune_audio_seconds_total", "speechtune_samples_total", "speechtune_step_duration_seconds",
    "speechtune_padding_ratio", "speechtune_gpu_memory_bytes",
}
OPERATOR_METRICS = {
    "speechtune_operator_reconcile_total", "speechtune_operator_reconcile_duration_seconds",
    "speechtune_finetunejobs",
}
STABLE_UIDS = {"training.json": "speechtune-training", "operator.json": "speechtune-operator"}
# What a user must see per job, and about the operator (the list).
TRAINING_MUST_SHOW = {
    "speechtune_train_loss", "speechtune_val_loss", "speechtune_val_wer_ratio", "speechtune_val_cer_ratio",
    "speechtune_audio_seconds_total", "speechtune_step", "speechtune_max_steps", "speechtune_learning_rate",
    "speechtune_gpu_memory_bytes",
}
OPERATOR_MUST_SHOW = OPERATOR_METRICS


def shipped_files() -> list[Path]:
    """Plain YAML/JSON files of the chart; templates/ holds Go templates, checked by helm."""
    files = [p for p in CHART.rglob("*") if p.suffix in {".yaml", ".yml", ".json"}]
    return sorted(p for p in files if "templates" not in p.relative_to(CHART).parts)


def load(path: Path) -> list[Any]:
    text = path.read_text()
    return [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over the chart's defaults."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def values_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def default_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: str(p.relative_to(CHART)))
def test_every_shipped_file_loads(path: Path) -> None:
    documents = load(path)
    assert documents and all(doc is not None for doc in documents), f"{path}: empty document"


def test_the_shipped_set_is_complete() -> None:
    names = {str(p.relative_to(CHART)) for p in shipped_files()}
    assert {"Chart.yaml", "values.yaml", "values.schema.json", "crds/finetunejob.yaml",
            "dashboards/training.json", "dashboards/operator.json", "ci/full-values.yaml"} <= names


def test_chart_crd_is_identical_to_the_source_of_truth() -> None:
    chart_crd = CHART / "crds" / "finetunejob.yaml"
    assert chart_crd.read_bytes() == (ROOT / "crds" / "finetunejob.yaml").read_bytes()


@pytest.mark.parametrize("path", [CHART / "values.yaml", *sorted((CHART / "ci").glob("*values.yaml"))],
                         ids=lambda p: p.name)
def test_values_files_match_the_schema(path: Path) -> None:
    values = deep_merge(default_values(), yaml.safe_load(path.read_text()))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in values_validator().iter_errors(values)]
    assert not errors, f"{path}: {errors}"


@pytest.mark.parametrize(("override", "field"), [
    ({"engines": {"hf-ctc": {"image": "ghcr.io/speechtune/speechtune-hf:latest"}}}, "engines.hf-ctc.image"),
    ({"engines": {"hf-ctc": {"image": "ghcr.io/speechtune/speechtune-hf"}}}, "engines.hf-ctc.image"),
    ({"engines": {"whisper": {"image": "x:1"}}}, "engines"),
    ({"operator": {"metricsPort": 0}}, "operator.metricsPort"),
    ({"operator": {"image": {"tag": "latest"}}}, "operator.image.tag"),
    ({"operator": {"logLevel": "chatty"}}, "operator.logLevel"),
    ({"operator": {"watchNamespaces": ["Not_A_Namespace"]}}, "operator.watchNamespaces.0"),
    ({"metrics": {"podMonitor": {"interval": "often"}}}, "metrics.podMonitor.interval"),
    ({"metrics": {"serviceMonitor": {"enabeld": True}}}, "metrics.serviceMonitor"),
    ({"replicas": 2}, ""),
])
def test_schema_refuses_bad_values(override: dict[str, Any], field: str) -> None:
    errors = list(values_validator().iter_errors(deep_merge(default_values(), override)))
    assert errors, f"accepted {override}"
    assert field in {".".join(map(str, e.absolute_path)) for e in errors}


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for panel in board["panels"]:
        flat.append(panel)
        flat.extend(panel.get("panels", []))
    return flat


def expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """speechtune_* metric names in a PromQL expression, histogram suffixes folded."""
    names = set(re.findall(r"\b(speechtune_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n
            for n in names}


def test_dashboards_have_stable_uids() -> None:
    assert {name: board["uid"] for name, board in dashboards().items()} == STABLE_UIDS


@pytest.mark.parametrize("name", sorted(STABLE_UIDS))
def test_dashboard_uses_a_prometheus_datasource_variable(name: str) -> None:
    board = dashboards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize("name", sorted(STABLE_UIDS))
def test_dashboard_panels_are_well_formed(name: str) -> None:
    board = dashboards()[name]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']}: no query"
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_training_dashboard_is_per_job_and_shows_what_was_promised() -> None:
    board = dashboards()["training.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"finetunejob", "namespace"} <= set(variables)
    for expr in expressions(board):
        assert 'finetunejob=~"$finetunejob"' in expr, f"not filtered by job: {expr}"
        assert metric_names(expr) <= TRAINER_METRICS, f"unknown metric in {expr}"
    assert TRAINING_MUST_SHOW <= set().union(*map(metric_names, expressions(board)))
    titles = {p["title"] for p in panels(board)}
    assert {"ETA", "Step", "Learning rate", "GPU memory", "Audio seconds per second", "WER / CER", "Loss"} <= titles


def test_operator_dashboard_shows_reconciles_errors_and_phases() -> None:
    board = dashboards()["operator.json"]
    shown = set().union(*map(metric_names, expressions(board)))
    assert shown <= OPERATOR_METRICS
    assert shown >= OPERATOR_MUST_SHOW
    assert any('result="error"' in e for e in expressions(board))
    assert any("by (phase)" in e for e in expressions(board))


def test_every_dashboard_expression_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses each panel query (variables filled in) as a recording rule: no server needed."""
    filled = {"$__rate_interval": "30s", "$namespace": "default", "$finetunejob": "demo"}
    rules = []
    for name, board in dashboards().items():
        for number, expr in enumerate(expressions(board)):
            for variable, value in filled.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{name}: unfilled variable in {expr}"
            rules.append({"record": f"dashboard:{Path(name).stem}:{number}", "expr": expr})
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
