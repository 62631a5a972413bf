"""What the model initializer fetches is what the engine loads offline: `speechtune model
fetch` downloads a fixture of the published model from a local hub (tests/hub_server.py,
HF_ENDPOINT=http://127.0.0.1:<port>); then, with the hub gone and HF_HUB_OFFLINE=1 (as the
operator starts trainer pods), a fresh process loads it through the engine's own loading
code from the model volume.

Fixtures: tests/pretrained/mms.py (facebook/mms-1b-all's layout, random weights, one
adapter per language) and tests/pretrained/canary.py (nvidia/canary-1b-v2's .nemo)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import yaml

import hub_server

REPO = Path(__file__).resolve().parents[2]


def serve_folder(repo_id: str, folder: Path, extra: dict[str, bytes] | None = None) -> hub_server.Hub:
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return hub_server.Hub(repos={repo_id: hub_server.Repo({**files, **(extra or {})})})


def job_file(tmp_path: Path, engine: str, pretrained: str, target_lang: str) -> Path:
    spec: dict[str, Any] = {
        "engine": engine, "model": {"pretrained": pretrained, "volume": {"claimName": "models"}},
        "data": {"volume": {"claimName": "data"}, "train": "train.json", "validation": "valid.json",
                 "targetLang": target_lang, "sourceLang": target_lang},
        "training": {"maxSteps": 10}, "output": {"volume": {"claimName": "runs"}}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "speechtune.dev/v1alpha1", "kind": "FinetuneJob",
                                    "metadata": {"name": "offline", "namespace": "default"}, "spec": spec}))
    return path


def pod_env(models: Path, **extra: str) -> dict[str, str]:
    """The environment the operator gives the pods (HF_HOME/NEMO_CACHE_DIR on the volume)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HOME": str(models / "huggingface"), "NEMO_CACHE_DIR": str(models / "nemo"), **extra}


def fetch(job: Path, models: Path, hub: hub_server.Hub) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "speechtune.cli", "model", "fetch", "--job", str(job),
                           "--model-dir", str(models)], env=pod_env(models, HF_ENDPOINT=hub.url),
                          capture_output=True, text=True, timeout=600)


def offline(script: str, models: Path) -> subprocess.CompletedProcess[str]:
    """A fresh process as a trainer pod: offline, and a hub address nothing listens on."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(models)],
                          env=pod_env(models, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9"),
                          capture_output=True, text=True, timeout=600, cwd=REPO)


def test_hf_ctc_loads_the_fetched_mms_model_and_its_adapter_offline(tmp_path: Path) -> None:
    from pretrained import mms

    layout = mms.random_layout(tmp_path / "published")
    models = tmp_path / "models"
    job = job_file(tmp_path, "hf-ctc", "facebook/mms-1b-all", "de")  # -> adapter.deu
    for hub in hub_server.serve(serve_folder("facebook/mms-1b-all", layout)):
        first = fetch(job, models, hub)
        assert first.returncode == 0, first.stderr
        assert "downloaded to" in first.stdout
        files = {p.rsplit("/", 1)[-1] for m, p in hub.file_requests() if m == "GET"}
        assert "adapter.deu.safetensors" in files and "adapter.fra.safetensors" not in files
        hub.requests.clear()
        second = fetch(job, models, hub)
        assert second.returncode == 0 and "already complete in" in second.stdout, second.stderr
        assert hub.requests == []  # the second job's initializer asks the hub nothing

    loaded = offline("""
        import sys
        from pathlib import Path
        import safetensors.torch, torch
        from speechtune import spec as specs
        from speechtune.engines.hf_ctc import modelling, settings
        models = Path(sys.argv[1])
        spec = specs.load(models.parent / "job.yaml").typed
        hf, source = settings.from_spec(spec, max_steps=None, model_dir=models)
        model, adapted = modelling.load_model(source, adapter_lang=hf.adapter_lang, model_config={},
                                              cache_dir=models)
        published = safetensors.torch.load_file(str(models.parent / "published" / "adapter.deu.safetensors"))
        assert adapted and hf.adapter_lang == "deu"
        assert torch.equal(model.lm_head.weight, published["lm_head.weight"])
        print("loaded offline", type(model).__name__, hf.adapter_lang)
    """, models)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "loaded offline Wav2Vec2ForCTC deu" in loaded.stdout


def test_nemo_canary_restores_the_fetched_nemo_file_offline(tmp_path: Path,
                                                            pretrained_canary: Callable[[str], Path]) -> None:
    fixture = pretrained_canary("canary-1b-v2")
    published = tmp_path / "published"
    published.mkdir()
    (published / "canary-1b-v2.nemo").write_bytes(fixture.read_bytes())
    (published / "README.md").write_text("# Canary 1B v2\n")
    models = tmp_path / "models"
    job = job_file(tmp_path, "nemo-canary", "nvidia/canary-1b-v2", "en")
    for hub in hub_server.serve(serve_folder("nvidia/canary-1b-v2", published)):
        done = fetch(job, models, hub)
        assert done.returncode == 0, done.stderr
    restored = offline("""
        import sys
        from pathlib import Path
        from speechtune.engines.nemo_canary import engine
        engine.use_model_volume_as_cache(Path(sys.argv[1]))
        model = engine.load_pretrained(engine.ModelSource("nvidia/canary-1b-v2", is_hub_name=True))
        print("restored offline", type(model).__name__, model.prompt_format)
    """, models)
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert "restored offline EncDecMultiTaskModel canary2" in restored.stdout
