"""Fetch a FinetuneJob's hub model once into the model volume (`speechtune model fetch`).

The operator runs this in a CPU-only Job before any trainer pod exists; the trainer pods
then start with HF_HUB_OFFLINE=1 and find the files where their engine looks:

- hf-ctc calls `from_pretrained(name, cache_dir=<model volume>)` (engines/hf_ctc/engine.py),
  so the Hub cache is the model volume's root;
- nemo-canary calls NeMo's `from_pretrained("org/name")`, which looks for `<name>.nemo` with
  huggingface_hub's `try_to_load_from_cache` in the default cache, `$HF_HOME/hub` (the
  operator sets HF_HOME=/models/huggingface; `use_model_volume_as_cache` does the same).

Downloads go through huggingface_hub (`snapshot_download`: its cache layout, its locks,
its resumable `.incomplete` files). What is ours is the completion marker: written
atomically after every file is in place, so a half download is never taken as complete,
and read first, so a second job with the same model makes no request at all.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

from speechtune import spec as specs

MARKER_DIR = ".speechtune/fetched"  # on the model volume
EXIT_PERMANENT = 1  # the spec or the hub says no: retrying cannot help (the Job fails at once)
EXIT_TRANSIENT = 75  # EX_TEMPFAIL: network, hub down, truncated download; the Job retries
# Weight formats other frameworks (or exports) ship next to the PyTorch weights; a model
# repo often carries several, and each can be as large as the model.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".h5", ".ot", ".onnx", ".tflite", ".pt", ".pth",
                    ".ckpt", ".nemo", ".gguf")
_ADAPTER = re.compile(r"^adapter\.([^.]+)\.(safetensors|bin)$")  # MMS: one adapter per language


class FetchError(Exception):
    """One line for the user; `permanent` when no retry can help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclasses.dataclass(frozen=True)
class Request:
    """What one job needs from the hub."""

    engine: str
    repo_id: str
    revision: str = "main"
    adapter_lang: str | None = None  # hf-ctc: the one MMS adapter the job loads

    def key(self) -> str:
        """The marker's file name: one per model, revision and selection."""
        digest = hashlib.sha256(repr(dataclasses.astuple(self)).encode()).hexdigest()[:16]
        readable = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.engine}--{self.repo_id}")[:100]
        return f"{readable}--{digest}.json"


@dataclasses.dataclass(frozen=True)
class Fetched:
    snapshot: Path
    commit: str
    files: tuple[str, ...]
    reused: bool


def request_for(spec: specs.FinetuneSpec) -> Request | None:
    """The download a spec needs, None when it starts from a file or from scratch.
    Raises FetchError (permanent) for a hub name this command cannot prefetch."""
    name = spec.model.pretrained if spec.model else None
    if not name or (spec.model and spec.model.path):
        return None  # spec.model.path wins over pretrained in every engine
    engine = spec.engine
    if engine == "nemo-canary":
        if "/" not in name:
            raise FetchError(f"spec.model.pretrained: {name!r} is an NGC name; the model initializer fetches "
                             "Hugging Face Hub names (org/name, e.g. nvidia/canary-1b-v2)", permanent=True)
        return Request(engine=engine, repo_id=name)
    if engine == "hf-ctc":
        from speechtune.engines.hf_ctc import settings as hf_settings  # torch-free

        hf, _ = hf_settings.from_spec(spec, max_steps=None, model_dir=Path("/models"))
        return Request(engine=engine, repo_id=name, adapter_lang=hf.adapter_lang)
    raise FetchError(f"spec.model.pretrained: engine {engine} does not load hub models", permanent=True)


def cache_dir_for(engine: str, model_dir: Path) -> Path:
    """Where the engine's loader looks for this model (see the module's docstring)."""
    if engine == "hf-ctc":
        return model_dir
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def select_files(request: Request, repo_files: Iterable[str]) -> list[str]:
    """The files the engine's loader reads, out of the repository's listing.

    nemo-canary: `<name>.nemo` (what NeMo's from_pretrained looks up). hf-ctc: the top-level
    config and tokenizer files, one weight format (safetensors when there are any, as
    transformers prefers), and the adapter of the job's language only (mms-1b-all ships
    over a thousand)."""
    files = sorted(set(repo_files))
    if request.engine == "nemo-canary":
        wanted = PurePosixPath(request.repo_id).name + ".nemo"
        if wanted not in files:
            raise FetchError(f"spec.model.pretrained: {request.repo_id} has no {wanted} on the hub (NeMo loads "
                             "hub models from that file)", permanent=True)
        return [wanted]
    top = [f for f in files if "/" not in f]
    weights = [f for f in top if f.endswith(_WEIGHT_SUFFIXES) and not _ADAPTER.match(f)]
    chosen = ([f for f in weights if f.endswith(".safetensors")]
              or [f for f in weights if f.endswith(".bin")])
    index = [f for f in top if f in ("model.safetensors.index.json", "pytorch_model.bin.index.json")]
    other = [f for f in top if not f.endswith(_WEIGHT_SUFFIXES) and f not in index and not f.startswith(".")]
    adapters = {(m.group(1), m.group(2)): f for f in top if (m := _ADAPTER.match(f))}
    adapter = adapters.get((request.adapter_lang or "", "safetensors")) or adapters.get((request.adapter_lang or "", "bin"))
    if not chosen:
        raise FetchError(f"spec.model.pretrained: {request.repo_id} has no PyTorch weights "
                         "(model.safetensors or pytorch_model.bin) on the hub", permanent=True)
    wanted_index = [f for f in index if f.startswith("model.safetensors") == chosen[0].endswith(".safetensors")]
    return sorted([*other, *wanted_index, *chosen, *([adapter] if adapter else [])])


def fetch(request: Request, *, cache_dir: Path, model_dir: Path, endpoint: str | None = None,
          token: str | None = None) -> Fetched:
    """The model in the cache, downloaded unless a complete earlier fetch is recorded.
    Raises FetchError with one line."""
    marker = model_dir / MARKER_DIR / request.key()
    reused = completed(marker, cache_dir, request)
    if reused is not None:
        return reused
    from huggingface_hub import HfApi, snapshot_download

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(request.repo_id, revision=request.revision)
        files = select_files(request, (s.rfilename for s in info.siblings or ()))
        snapshot = Path(snapshot_download(
            request.repo_id, revision=request.revision, cache_dir=str(cache_dir), endpoint=endpoint,
            token=token, allow_patterns=[glob.escape(f) for f in files]))
    except FetchError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes one line, none a traceback
        raise _described(error, request) from None
    missing = [f for f in files if not (snapshot / f).is_file()]
    if missing:  # snapshot_download raises on a failed file; this guards the marker regardless
        raise FetchError(f"{request.repo_id}: {missing[0]} missing after the download", permanent=False)
    fetched = Fetched(snapshot=snapshot, commit=snapshot.name, files=tuple(files), reused=False)
    _write_marker(marker, cache_dir, fetched)
    return fetched


def completed(marker: Path, cache_dir: Path, request: Request) -> Fetched | None:
    """The recorded fetch when every file it lists is still in the cache and the revision
    still points at its commit (what the offline loaders will resolve); else None."""
    try:
        record = json.loads(marker.read_text())
        storage = cache_dir / ("models--" + request.repo_id.replace("/", "--"))
        commit, files = str(record["commit"]), tuple(str(f) for f in record["files"])
        if (storage / "refs" / request.revision).read_text().strip() != commit:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    snapshot = storage / "snapshots" / commit
    if not files or not all((snapshot / f).is_file() for f in files):
        return None
    return Fetched(snapshot=snapshot, commit=commit, files=files, reused=True)


def _write_marker(marker: Path, cache_dir: Path, fetched: Fetched) -> None:
    """Temp file, fsync, rename, fsync of the folder: the marker is whole or absent."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    record = {"commit": fetched.commit, "files": list(fetched.files), "cacheDir": str(cache_dir),
              "fetchedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    fd, tmp = tempfile.mkstemp(dir=marker.parent, prefix=".marker-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(record, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, marker)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(marker.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _described(error: Exception, request: Request) -> FetchError:
    from huggingface_hub import errors

    repo = request.repo_id
    if isinstance(error, errors.GatedRepoError):
        return FetchError(f"spec.model.pretrained: {repo} is gated; its terms must be accepted by the account "
                          "whose token the cluster's HF token secret holds", permanent=True)
    if isinstance(error, errors.RepositoryNotFoundError):
        return FetchError(f"spec.model.pretrained: {repo} not found on the hub (or private: the cluster's HF "
                          "token secret has no access)", permanent=True)
    if isinstance(error, errors.RevisionNotFoundError):
        return FetchError(f"spec.model.pretrained: {repo} has no revision {request.revision!r}", permanent=True)
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    return FetchError(f"{repo}: download failed ({type(error).__name__}: {first_line}); nothing is marked "
                      "complete, the next attempt resumes", permanent=False)
