"""A local stand-in for the Hugging Face Hub: serves fixture repositories over HTTP in the
shape huggingface_hub (2.x) requests, so `HF_ENDPOINT=http://127.0.0.1:<port>` downloads
with the real client and nothing leaves the machine.

The routes are the ones huggingface_hub's sources call (hf_api.py, file_download.py,
_snapshot_download.py):
- GET  /api/models/{repo}/revision/{rev}  model_info / repo_info: {"id", "sha", "siblings"}
- GET  /api/models/{repo}/tree/{rev}      list_repo_tree: [{"type", "path", "size", "oid"}]
- HEAD /{repo}/resolve/{rev}/{file}       get_hf_file_metadata: X-Repo-Commit, ETag, Content-Length
- GET  /{repo}/resolve/{rev}/{file}       the bytes (honours `Range: bytes=N-`, as resumes send)
Errors carry the Hub's `X-Error-Code` header (RepoNotFound, RevisionNotFound, EntryNotFound),
which huggingface_hub turns into its typed errors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import re
import threading
from typing import Iterator, Mapping
from urllib.parse import unquote, urlsplit

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<what>revision|tree)/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


@dataclasses.dataclass
class Repo:
    files: Mapping[str, bytes]

    @property
    def sha(self) -> str:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha1(self.files[name]).digest())
        return digest.hexdigest()


@dataclasses.dataclass
class Hub:
    """Repositories by id, the requests seen (method, path), and a fault switch."""

    repos: dict[str, Repo] = dataclasses.field(default_factory=dict)
    requests: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    truncate: set[str] = dataclasses.field(default_factory=set)  # file names sent cut in half
    url: str = ""

    def file_requests(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if "/resolve/" in r[1]]


def _blob_id(data: bytes) -> str:  # git's blob id, as the Hub's "oid" is
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _handler(hub: Hub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            if match := _API.match(path):
                repo = self._repo(match["repo"])
                if repo is not None and self._revision(match["rev"], repo):
                    if match["what"] == "revision":
                        self._json({"id": match["repo"], "modelId": match["repo"], "sha": repo.sha, "private": False,
                                    "siblings": [{"rfilename": name} for name in sorted(repo.files)]}, body)
                    else:
                        self._json([{"type": "file", "path": name, "size": len(data), "oid": _blob_id(data)}
                                    for name, data in sorted(repo.files.items())], body)
                return
            if match := _RESOLVE.match(path):
                repo = self._repo(match["repo"])
                if repo is None or not self._revision(match["rev"], repo):
                    return
                data = repo.files.get(match["file"])
                if data is None:
                    self._error(404, "EntryNotFound")
                    return
                self._file(repo, match["file"], data, body)
                return
            self._error(404, "RepoNotFound")

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound")  # the Hub answers 401 for missing and private repos
            return repo

        def _revision(self, revision: str, repo: Repo) -> bool:
            if revision in ("main", repo.sha):
                return True
            self._error(404, "RevisionNotFound")
            return False

        def _file(self, repo: Repo, name: str, data: bytes, body: bool) -> None:
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if ranged:
                start = min(int(ranged[1]), len(data))
            self.send_response(206 if ranged else 200)
            self.send_header("X-Repo-Commit", repo.sha)
            self.send_header("ETag", f'"{_blob_id(data)}"')
            self.send_header("Content-Length", str(len(data) - start))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if not body:
                return
            chunk = data[start:]
            if name in hub.truncate:  # promise it all, send half, hang up: a dropped connection
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(chunk)

        def _json(self, value: object, body: bool) -> None:
            raw = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if body:
                self.wfile.write(raw)

        def _error(self, status: int, code: str) -> None:
            raw = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

    return Handler


def serve(hub: Hub) -> Iterator[Hub]:
    """Runs the hub on 127.0.0.1 (a free port) while the generator is suspended."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
