"""A Hugging Face Hub served on 127.0.0.1: the part of the HTTP API that ``hf_hub_download`` and
``model_info`` use, so tests run the real huggingface_hub client against it through ``HF_ENDPOINT``.

- ``HEAD|GET /{repo_id}/resolve/{revision}/{path}``: regular files answer 200 with ``ETag`` (git blob sha1),
  ``X-Repo-Commit`` and ``Content-Length``; large-file-storage files (``*.safetensors``) answer 302 to a
  content-addressed URL on another origin (``localhost`` instead of ``127.0.0.1``, as the Hub redirects to its
  CDN) with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``. Errors carry ``X-Error-Code`` (RepoNotFound,
  RevisionNotFound, EntryNotFound) as the Hub sends them.
- ``HEAD|GET /lfs/{sha256}``: the blob, with ``Range`` support.
- ``GET /api/models/{repo_id}[/revision/{revision}]``: id, sha and siblings.
- uploads, as ``HfApi.create_repo`` / ``upload_folder`` make them without Xet (``HF_HUB_DISABLE_XET=1``):
  ``POST /api/repos/create``, ``POST /api/models/{repo_id}/preupload/{revision}`` (safetensors go to LFS),
  ``POST /{repo_id}.git/info/lfs/objects/batch`` (basic transfer: ``PUT /lfs-upload/{sha256}``) and
  ``POST /api/models/{repo_id}/commit/{revision}`` (NDJSON: header, file, lfsFile), and
  ``POST /api/validate-yaml`` for the model card's metadata.

Revisions are branch names or 40-hex commit ids. Every request is logged in ``requests`` for assertions.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pth")


class LocalHub:
    def __init__(self) -> None:
        self.repos: Dict[str, Dict] = {}  # repo_id -> {"refs": {branch: commit}, "commits": {commit: {path: bytes}}}
        self.blobs: Dict[str, bytes] = {}  # sha256 -> bytes
        self.requests: List[Tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "LocalHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def commit(self, repo_id: str, files: Dict[str, bytes], branch: str = "main") -> str:
        """Add a commit holding exactly ``files`` on ``branch``; returns its 40-hex id."""
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        listing = "".join(f"{p}:{hashlib.sha256(b).hexdigest()}\n" for p, b in sorted(files.items()))
        commit = hashlib.sha1(f"{repo_id}\n{repo['refs'].get(branch)}\n{listing}".encode()).hexdigest()
        repo["commits"][commit] = dict(files)
        repo["refs"][branch] = commit
        for data in files.values():
            self.blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def count(self, method: str, fragment: str) -> int:
        return sum(1 for m, path in self.requests if m == method and fragment in path)

    # --- HTTP ---------------------------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str) -> Tuple[Optional[str], Optional[Dict[str, bytes]]]:
        repo = self.repos[repo_id]
        commit = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
        return commit, repo["commits"].get(commit) if commit else None

    def _handler(hub):  # noqa: N805  (the handler closes over the hub)
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:  # headers only: _send never writes a body for HEAD
                self._serve()

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                path = unquote(self.path.split("?", 1)[0])
                hub.requests.append(("POST", path))
                body = self._body()
                if path == "/api/repos/create":
                    spec = json.loads(body)
                    repo_id = f"{spec['organization']}/{spec['name']}" if spec.get("organization") else spec["name"]
                    if repo_id in hub.repos:
                        return self._error(409, "RepoExists", {"Content-Type": "application/json"})
                    hub.repos[repo_id] = {"refs": {}, "commits": {}}
                    return self._json({"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":  # a model card's metadata: here only checked to be YAML
                    card = json.loads(body)["content"]
                    front = re.match(r"---\n(.*?)\n---", card, re.DOTALL)
                    try:
                        yaml.safe_load(front.group(1) if front else "")
                    except yaml.YAMLError as e:
                        return self._send(400, {"Content-Type": "application/json"},
                                          json.dumps({"errors": [{"message": str(e)}]}).encode())
                    return self._json({"errors": [], "warnings": []})
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path):
                    files = json.loads(body)["files"]
                    return self._json({"files": [{"path": f["path"], "shouldIgnore": False, "oid": None,
                                                  "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular"}
                                                 for f in files]})
                if m := re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
                    objects = []
                    for obj in json.loads(body)["objects"]:
                        entry = {"oid": obj["oid"], "size": obj["size"]}
                        if obj["oid"] not in hub.blobs:
                            entry["actions"] = {"upload": {"href": f"http://localhost:{hub.port}/lfs-upload/{obj['oid']}"}}
                        objects.append(entry)
                    return self._json({"transfer": "basic", "objects": objects})
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path):
                    return self._commit(m.group(1), m.group(2), body)
                self._error(404, "NotFound")

            def do_PUT(self) -> None:
                path = unquote(self.path.split("?", 1)[0])
                hub.requests.append(("PUT", path))
                data = self._body()
                m = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path)
                if not m or hashlib.sha256(data).hexdigest() != m.group(1):
                    return self._error(400, "BadRequest")
                hub.blobs[m.group(1)] = data
                self._send(200, {})

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if not size:
                            return data
                        data += chunk
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _json(self, payload) -> None:
                self._send(200, {"Content-Type": "application/json"}, json.dumps(payload).encode())

            def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
                if repo_id not in hub.repos:
                    return self._error(404, "RepoNotFound")
                repo = hub.repos[repo_id]
                parent = repo["refs"].get(revision)
                files = dict(repo["commits"][parent]) if parent else {}
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    value = item["value"]
                    if item["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] == "lfsFile":
                        files[value["path"]] = hub.blobs[value["oid"]]
                    elif item["key"] == "deletedFile":
                        files.pop(value["path"], None)
                commit = hub.commit(repo_id, files, revision)
                self._json({"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{commit}", "commitOid": commit,
                            "pullRequestUrl": None})

            def _send(self, status: int, headers: Dict[str, str], data: bytes = b"") -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", headers.get("Content-Length", str(len(data))))
                self.end_headers()
                if self.command != "HEAD" and data:
                    self.wfile.write(data)

            def _error(self, status: int, code: str, extra: Optional[Dict[str, str]] = None) -> None:
                data = json.dumps({"error": code}).encode()
                self._send(status, {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json",
                                    **(extra or {})}, data)

            def _serve(self) -> None:
                path = unquote(self.path.split("?", 1)[0])
                hub.requests.append((self.command, path))
                if m := re.fullmatch(r"/lfs/([0-9a-f]{64})", path):
                    return self._blob(m.group(1))
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path):
                    return self._info(m.group(1), m.group(2) or "main")
                if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self._resolve_file(m.group(1), m.group(2), m.group(3))
                self._error(404, "NotFound")

            def _resolve_file(self, repo_id: str, revision: str, filename: str) -> None:
                if repo_id not in hub.repos:
                    return self._error(401, "RepoNotFound")
                commit, files = hub._resolve(repo_id, revision)
                if files is None:
                    return self._error(404, "RevisionNotFound")
                if filename not in files:
                    return self._error(404, "EntryNotFound", {"X-Repo-Commit": commit})
                data = files[filename]
                git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                headers = {"X-Repo-Commit": commit, "ETag": f'"{git_sha1}"', "Accept-Ranges": "bytes"}
                if filename.endswith(LFS_SUFFIXES):
                    sha256 = hashlib.sha256(data).hexdigest()
                    headers.update({
                        "Location": f"http://localhost:{hub.port}/lfs/{sha256}",
                        "X-Linked-Etag": f'"{sha256}"',
                        "X-Linked-Size": str(len(data)),
                    })
                    return self._send(302, headers)
                self._send(200, {**headers, "Content-Type": "application/octet-stream"}, data)

            def _blob(self, sha256: str) -> None:
                data = hub.blobs.get(sha256)
                if data is None:
                    return self._error(404, "NotFound")
                start = 0
                if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
                    start = int(m.group(1))
                headers = {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self._send(206 if start else 200, headers, data[start:])

            def _info(self, repo_id: str, revision: str) -> None:
                if repo_id not in hub.repos:
                    return self._error(401, "RepoNotFound")
                commit, files = hub._resolve(repo_id, revision)
                if files is None:
                    return self._error(404, "RevisionNotFound")
                info = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                        "siblings": [{"rfilename": p} for p in sorted(files)]}
                self._send(200, {"Content-Type": "application/json", "X-Repo-Commit": commit}, json.dumps(info).encode())

        return Handler
