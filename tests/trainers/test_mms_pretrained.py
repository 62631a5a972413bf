"""Fine-tuning the pretrained MMS fixture (tests/pretrained/mms.py: facebook/mms-1b-all's
layout, trained on en/de/fr speech) through `speechtune run`'s session, scored on a
HELD-OUT test split (sentences disjoint from training; synth guarantees it):

- a new language (Spanish, never heard by the fixture) with a fresh adapter, and with LoRA;
- an existing language (German) starting from its own adapter.deu.safetensors, the
  guide's `load_adapter` path.

CER before = the prepared model on the test split before step 1 (session's
score_before_training: for a new language a fresh adapter and head, for German the
loaded adapter); after = the run's test score. Printed with -rA for the closing note."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml

from speechtune import spec as specs
from speechtune.data import synth
from speechtune.runtime import session, volumes

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]
NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "final_dropout": 0.0,
              "layerdrop": 0.0, "mask_time_prob": 0.0}


@pytest.fixture(scope="module")
def spanish(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spanish")
    synth.synthesize(folder, n=160, languages=["es"], domain="generic", seed=41)
    return folder


def run(pretrained_mms: Any, data: Path, runs: Path, *, target: str, peft: Mapping[str, Any], steps: int,
        lr: float) -> Mapping[str, Any]:
    """examples/tiny-mms.yaml pointed at the fixture and `data`; returns metrics.json."""
    document = yaml.safe_load((REPO / "examples" / "tiny-mms.yaml").read_text())
    spec = document["spec"]
    spec["model"] = {"path": pretrained_mms.model.name, "volume": {"claimName": "models"}}
    spec["data"].update(sourceLang=target, targetLang=target, normalization="lower")
    spec["training"].update(maxSteps=steps, learningRate=lr, valCheckInterval=steps // 2, peft=dict(peft),
                            overrides={"modelConfig": NO_DROPOUT})
    job = specs.validate(document)
    mounts = volumes.local_mounts(job.typed, {"demo-data": data, "demo-runs": runs,
                                             "models": pretrained_mms.model.parent})
    outcome = session.run(job, mounts, session.Options(metrics_port=0, score_before_training=True))
    assert outcome.status == "succeeded", outcome.reason
    return json.loads((outcome.run_folder / "metrics.json").read_text())


def cers(metrics: Mapping[str, Any], language: str) -> tuple[float, float]:
    return float(metrics["baseline"]["all"]["cer"]), float(metrics["test"][language]["cer"])


def test_a_new_languages_adapter_learns_it_held_out(pretrained_mms: Any, spanish: Path, tmp_path: Path) -> None:
    metrics = run(pretrained_mms, spanish, tmp_path, target="es", peft={"method": "adapters"}, steps=150, lr=1e-2)
    before, after = cers(metrics, "es")
    print(f"mms fixture, new language es, adapters: held-out CER {before:.3f} -> {after:.3f}")
    assert metrics["engine_facts"]["adapter_loaded"] is False  # no adapter.es: a fresh one, as MMS does
    assert metrics["engine_facts"]["trainable_parameters"] < 0.05 * metrics["engine_facts"]["total_parameters"]
    assert after < before - 0.2 and after < 0.75, (before, after)


def test_lora_on_the_pretrained_base_learns_a_new_language_held_out(pretrained_mms: Any, spanish: Path,
                                                                     tmp_path: Path) -> None:
    metrics = run(pretrained_mms, spanish, tmp_path, target="es",
                  peft={"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0}, steps=150, lr=1e-2)
    before, after = cers(metrics, "es")
    print(f"mms fixture, new language es, LoRA: held-out CER {before:.3f} -> {after:.3f}")
    assert after < before - 0.2 and after < 0.75, (before, after)


def test_an_existing_language_starts_from_its_adapter(pretrained_mms: Any, tmp_path: Path) -> None:
    """German: the run loads adapter.deu.safetensors and the deu vocabulary, so before any
    step it already transcribes the held-out German test split about as well as the
    fixture's builder measured (a wrong adapter, e.g. English's, would score near 1)."""
    german = pretrained_mms.data / "deu"
    metrics = run(pretrained_mms, german, tmp_path, target="de", peft={"method": "adapters"}, steps=40, lr=1e-3)
    before, after = cers(metrics, "de")
    built = pretrained_mms.facts["test_cer"]["deu"]["adapter_test_cer"]
    print(f"mms fixture, existing language de, adapter.deu as the start: held-out CER {before:.3f} -> {after:.3f} "
          f"(builder measured {built:.3f})")
    assert metrics["engine_facts"]["adapter_loaded"] is True
    assert before == pytest.approx(built, abs=0.1)
    assert after <= before + 0.02
