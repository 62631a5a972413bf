"""`speechtune model fetch` against a local hub (tests/hub_server.py): the real
huggingface_hub client downloads from HF_ENDPOINT=http://127.0.0.1:<port>.

The repositories mirror the published file layouts (names and which files exist, with
small placeholder bytes; loading real weights offline is tests/trainers/test_model_offline.py):
facebook/mms-1b-all (config, tokenizer files, model.safetensors next to pytorch_model.bin,
one adapter per language in both formats) and nvidia/canary-1b-v2 (one .nemo file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pytest
import yaml

import hub_server
from speechtune import cli, spec as specs
from speechtune.runtime import hub

MMS_LANGS = ("eng", "deu", "ben", "fra")


def mms_1b_all() -> hub_server.Repo:
    files = {name: f"{{\"name\": \"{name}\"}}".encode() for name in (
        "config.json", "preprocessor_config.json", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")}
    files |= {"README.md": b"# MMS-1b-all\n", ".gitattributes": b"*.bin filter=lfs\n",
              "model.safetensors": os.urandom(64 * 1024), "pytorch_model.bin": os.urandom(64 * 1024)}
    for lang in MMS_LANGS:
        files[f"adapter.{lang}.safetensors"] = os.urandom(4096)
        files[f"adapter.{lang}.bin"] = os.urandom(4096)
    return hub_server.Repo(files)


def canary_1b_v2() -> hub_server.Repo:
    return hub_server.Repo({"README.md": b"# Canary 1B v2\n", ".gitattributes": b"*.nemo filter=lfs\n",
                            "canary-1b-v2.nemo": os.urandom(128 * 1024)})


@pytest.fixture
def local_hub() -> Iterator[hub_server.Hub]:
    yield from hub_server.serve(hub_server.Hub(repos={"facebook/mms-1b-all": mms_1b_all(),
                                                      "nvidia/canary-1b-v2": canary_1b_v2()}))


def hf_spec(name: str = "facebook/mms-1b-all", lang: str = "bn") -> dict[str, object]:
    return full_spec({"engine": "hf-ctc", "model": {"pretrained": name, "volume": {"claimName": "models"}},
                      "data": {"targetLang": lang}})


def full_spec(spec: dict[str, object]) -> dict[str, object]:
    """The required fields around what a test varies (engine, model, data.targetLang)."""
    return {"engine": spec["engine"], "model": spec["model"],
            "data": {"volume": {"claimName": "d"}, "train": "train.json", "validation": "valid.json",
                     **(spec.get("data") or {})},  # type: ignore[dict-item]
            "training": {"maxSteps": 10}, "output": {"volume": {"claimName": "o"}}}


def fetch(local_hub: hub_server.Hub, models: Path, spec: dict[str, object]) -> hub.Fetched:
    request = hub.request_for(specs.parse(spec))
    assert request is not None
    cache = models if request.engine == "hf-ctc" else models / "huggingface" / "hub"
    return hub.fetch(request, cache_dir=cache, model_dir=models, endpoint=local_hub.url)


def test_first_fetch_downloads_what_the_engine_loads_and_a_second_makes_no_request(
        local_hub: hub_server.Hub, tmp_path: Path) -> None:
    first = fetch(local_hub, tmp_path, hf_spec())
    assert not first.reused
    # One weight format, the job's adapter (bn -> ben), the config, tokenizer and card files.
    assert sorted(first.files) == ["README.md", "adapter.ben.safetensors", "config.json", "model.safetensors",
                                   "preprocessor_config.json", "special_tokens_map.json",
                                   "tokenizer_config.json", "vocab.json"]
    downloaded = {path.rsplit("/", 1)[-1] for method, path in local_hub.file_requests() if method == "GET"}
    assert downloaded == set(first.files)
    repo = local_hub.repos["facebook/mms-1b-all"]
    assert first.commit == repo.sha
    # huggingface_hub's own cache layout, where from_pretrained(cache_dir=<volume>) looks.
    storage = tmp_path / "models--facebook--mms-1b-all"
    assert (storage / "refs" / "main").read_text() == repo.sha
    for name in first.files:
        assert (storage / "snapshots" / repo.sha / name).read_bytes() == repo.files[name]
    local_hub.requests.clear()

    second = fetch(local_hub, tmp_path, hf_spec())
    assert second.reused and second.files == first.files and second.commit == first.commit
    assert local_hub.requests == []  # not even the revision lookup


def test_another_language_is_another_selection(local_hub: hub_server.Hub, tmp_path: Path) -> None:
    fetch(local_hub, tmp_path, hf_spec(lang="bn"))
    local_hub.requests.clear()
    german = fetch(local_hub, tmp_path, hf_spec(lang="de"))
    assert not german.reused and "adapter.deu.safetensors" in german.files
    # Files already in the cache are not downloaded again (huggingface_hub's own check).
    assert {p.rsplit("/", 1)[-1] for m, p in local_hub.file_requests() if m == "GET"} == {"adapter.deu.safetensors"}


def test_nemo_fetches_the_nemo_file_where_nemo_looks_it_up(local_hub: hub_server.Hub, tmp_path: Path) -> None:
    from huggingface_hub import try_to_load_from_cache

    spec = full_spec({"engine": "nemo-canary",
                      "model": {"pretrained": "nvidia/canary-1b-v2", "volume": {"claimName": "m"}}})
    fetched = fetch(local_hub, tmp_path, spec)
    assert fetched.files == ("canary-1b-v2.nemo",)
    # NeMo's from_pretrained("nvidia/canary-1b-v2") asks exactly this of the default cache
    # ($HF_HOME/hub; the operator sets HF_HOME=/models/huggingface).
    found = try_to_load_from_cache("nvidia/canary-1b-v2", "canary-1b-v2.nemo",
                                   cache_dir=str(tmp_path / "huggingface" / "hub"))
    assert isinstance(found, str) and Path(found).read_bytes() == local_hub.repos["nvidia/canary-1b-v2"].files[
        "canary-1b-v2.nemo"]


def test_a_truncated_download_leaves_no_marker_and_one_line(local_hub: hub_server.Hub, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    local_hub.truncate.add("model.safetensors")
    job = write_job(tmp_path, hf_spec())
    code = cli.main(["model", "fetch", "--job", str(job), "--model-dir", str(tmp_path / "models"),
                     "--termination-log", str(tmp_path / "termination-log")])
    err = capsys.readouterr().err
    assert code == hub.EXIT_TRANSIENT
    # huggingface_hub logs each resume attempt (with Range) as it goes; the outcome is our
    # one line, last, and alone in the termination log the operator reports.
    lines = err.strip().splitlines()
    assert lines[-1].startswith("speechtune: model fetch: facebook/mms-1b-all: download failed (")
    assert lines[-1].endswith("nothing is marked complete, the next attempt resumes")
    assert "Traceback" not in err and "%|" not in err  # no traceback, no progress bars
    reported = (tmp_path / "termination-log").read_text().splitlines()
    assert len(reported) == 1 and reported[0] == lines[-1].removeprefix("speechtune: model fetch: ")
    assert not list((tmp_path / "models").glob(f"{hub.MARKER_DIR}/*.json"))
    assert ("GET", "/facebook/mms-1b-all/resolve/" + local_hub.repos["facebook/mms-1b-all"].sha
            + "/model.safetensors") in local_hub.requests  # it was the cut connection, not a lookup
    # The next attempt, with the connection healthy again, completes and marks it.
    local_hub.truncate.clear()
    assert cli.main(["model", "fetch", "--job", str(job), "--model-dir", str(tmp_path / "models")]) == 0
    assert len(list((tmp_path / "models").glob(f"{hub.MARKER_DIR}/*.json"))) == 1


def test_a_deleted_cache_file_is_fetched_again(local_hub: hub_server.Hub, tmp_path: Path) -> None:
    first = fetch(local_hub, tmp_path, hf_spec())
    (first.snapshot / "config.json").unlink()
    again = fetch(local_hub, tmp_path, hf_spec())
    assert not again.reused and (again.snapshot / "config.json").is_file()


@pytest.mark.parametrize(("spec", "expected"), [
    (hf_spec(name="facebook/no-such-model"), "spec.model.pretrained: facebook/no-such-model not found on the hub"),
    ({"engine": "nemo-canary", "model": {"pretrained": "canary-1b"}}, "spec.model.pretrained: 'canary-1b' is an NGC name"),
    ({"engine": "nemo-canary", "model": {"pretrained": "facebook/mms-1b-all"}},
     "spec.model.pretrained: facebook/mms-1b-all has no mms-1b-all.nemo on the hub"),
])
def test_what_no_retry_can_fix_exits_1_with_the_field(local_hub: hub_server.Hub, tmp_path: Path,
                                                      spec: dict[str, object], expected: str,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "models" / "huggingface"))
    job = write_job(tmp_path, spec)
    code = cli.main(["model", "fetch", "--job", str(job), "--model-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == hub.EXIT_PERMANENT
    assert len(err) == 1 and err[0].startswith("speechtune: model fetch: " + expected), err


def test_a_job_without_a_hub_model_fetches_nothing(local_hub: hub_server.Hub, tmp_path: Path) -> None:
    spec = hf_spec()
    spec["model"] = {"path": "mms", "pretrained": "facebook/mms-1b-all", "volume": {"claimName": "m"}}
    assert hub.request_for(specs.parse(spec)) is None
    assert hub.request_for(specs.parse(full_spec({"engine": "hf-ctc", "model": {}}))) is None


@pytest.mark.parametrize(("files", "expected"), [
    # Sharded safetensors with their index; the .bin twins and other frameworks stay behind.
    (["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
      "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
      "flax_model.msgpack", "onnx/model.onnx"],
     ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
      "model.safetensors.index.json"]),
    # Only .bin weights: those; an adapter only in .bin: that one.
    (["config.json", "pytorch_model.bin", "adapter.ben.bin", "adapter.eng.bin"],
     ["adapter.ben.bin", "config.json", "pytorch_model.bin"]),
])
def test_hf_selection(files: list[str], expected: list[str]) -> None:
    assert hub.select_files(hub.Request("hf-ctc", "org/m", adapter_lang="ben"), files) == expected


def test_a_repo_without_pytorch_weights_is_refused() -> None:
    with pytest.raises(hub.FetchError, match="has no PyTorch weights") as raised:
        hub.select_files(hub.Request("hf-ctc", "org/m"), ["config.json", "tf_model.h5"])
    assert raised.value.permanent


def test_a_broken_marker_is_not_trusted(local_hub: hub_server.Hub, tmp_path: Path) -> None:
    first = fetch(local_hub, tmp_path, hf_spec())
    marker = next((tmp_path / hub.MARKER_DIR).glob("*.json"))
    marker.write_text(json.dumps({"commit": first.commit})[:-3])  # cut short
    assert not fetch(local_hub, tmp_path, hf_spec()).reused


def write_job(tmp_path: Path, spec: dict[str, object]) -> Path:
    full = full_spec(spec)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "speechtune.dev/v1alpha1", "kind": "FinetuneJob",
                                    "metadata": {"name": "fetch", "namespace": "default"}, "spec": full}))
    return path
