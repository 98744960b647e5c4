"""A Secret Manager server speaking the REST (JSON/HTTP) API v1 that the Python SDK's REST
transport uses, written from the API reference: ``secrets.create``, ``secrets.list`` (with
``filter`` on ``name:`` and ``labels.K=V``, paging), ``secrets.get``, ``secrets.delete``,
``secrets.addVersion``, ``versions.access`` (``latest`` or a number; payloads with
``dataCrc32c``), ``versions.list``, ``versions.destroy``.

Errors use Google's shape ``{"error": {"code", "message", "status"}}``: 400
FAILED_PRECONDITION (a destroyed version), 403 PERMISSION_DENIED, 404 NOT_FOUND, 409
ALREADY_EXISTS, 429 RESOURCE_EXHAUSTED, 500 INTERNAL, 503 UNAVAILABLE. Requests come with
anonymous credentials (no Authorization header), as the SDK sends them for an emulator.
"""

from __future__ import annotations

import base64
import fnmatch
import threading
from typing import Any

import google_crc32c

from .http import FakeService, HttpError, Request, now_rfc3339

PROJECT_NUMBER = "123456789012"
STATUS = {400: "FAILED_PRECONDITION", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
          502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_SECRET = r"/v1/projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/:]+)"


class FakeSecretManager(FakeService):
    routes = [
        ("GET", _SECRET + r"/versions/(?P<version>[^/:]+):access", "access"),
        ("POST", _SECRET + r"/versions/(?P<version>[^/:]+):destroy", "destroy"),
        ("GET", _SECRET + r"/versions", "list_versions"),
        ("POST", _SECRET + r":addVersion", "add_version"),
        ("GET", _SECRET, "get_secret"),
        ("DELETE", _SECRET, "delete_secret"),
        ("GET", r"/v1/projects/(?P<project>[^/]+)/secrets", "list_secrets"),
        ("POST", r"/v1/projects/(?P<project>[^/]+)/secrets", "create_secret"),
    ]

    def __init__(self) -> None:
        self.secrets: dict[str, dict] = {}   # "project/secret" -> {"labels", "versions": [...]}
        self.denied: list[str] = []
        self.corrupt: set[str] = set()       # secret ids whose next payload checksum is wrong
        self._write = threading.Lock()
        super().__init__()

    def deny(self, pattern: str) -> None:
        """Secret ids matching ``pattern`` answer 403 PERMISSION_DENIED."""
        self.denied.append(pattern)

    def error_body(self, status: int, message: str, extra: dict) -> Any:
        return {"error": {"code": status, "message": message or STATUS.get(status, "error"),
                          "status": extra.get("status") or STATUS.get(status, "UNKNOWN")}}

    def before(self, request: Request, route: str) -> None:
        secret = request.params.get("secret") or request.query.get("secretId") or ""
        if any(fnmatch.fnmatch(secret, p) for p in self.denied):
            raise HttpError(403, f"Permission 'secretmanager.versions.access' denied for "
                                 f"resource 'projects/{PROJECT_NUMBER}/secrets/{secret}' (or it "
                                 "may not exist).")

    # -- helpers --------------------------------------------------------------------------
    def _name(self, request: Request) -> str:
        return f"{request.params['project']}/{request.params['secret']}"

    def _secret(self, request: Request) -> dict:
        entry = self.secrets.get(self._name(request))
        if entry is None:
            raise HttpError(404, f"Secret [projects/{PROJECT_NUMBER}/secrets/"
                                 f"{request.params['secret']}] not found.")
        return entry

    @staticmethod
    def _secret_json(secret_id: str, entry: dict) -> dict:
        return {"name": f"projects/{PROJECT_NUMBER}/secrets/{secret_id}",
                "replication": {"automatic": {}}, "createTime": entry["createTime"],
                "labels": entry["labels"], "etag": f"\"{len(entry['versions'])}\""}

    @staticmethod
    def _version_json(secret_id: str, number: int, version: dict) -> dict:
        return {"name": f"projects/{PROJECT_NUMBER}/secrets/{secret_id}/versions/{number}",
                "createTime": version["createTime"], "state": version["state"],
                "replicationStatus": {"automatic": {}}, "etag": f"\"{number}\""}

    # -- secrets --------------------------------------------------------------------------
    def create_secret(self, request: Request):
        secret_id = request.query.get("secretId", "")
        body = request.json()
        name = f"{request.params['project']}/{secret_id}"
        with self._write:
            if name in self.secrets:
                raise HttpError(409, f"Secret [projects/{PROJECT_NUMBER}/secrets/{secret_id}] "
                                     "already exists.")
            entry = self.secrets[name] = {"labels": body.get("labels") or {}, "versions": [],
                                          "createTime": now_rfc3339()}
        return 200, self._secret_json(secret_id, entry)

    def get_secret(self, request: Request):
        return 200, self._secret_json(request.params["secret"], self._secret(request))

    def delete_secret(self, request: Request):
        self._secret(request)
        del self.secrets[self._name(request)]
        return 200, {}

    def list_secrets(self, request: Request):
        project = request.params["project"]
        terms = [t for t in request.query.get("filter", "").replace(" AND ", " ").split() if t]
        found = []
        for name, entry in sorted(self.secrets.items()):
            owner, _, secret_id = name.partition("/")
            if owner == project and all(_matches(t, secret_id, entry) for t in terms):
                found.append(self._secret_json(secret_id, entry))
        size = int(request.query.get("pageSize") or 25000)
        start = int(request.query.get("pageToken") or 0)
        page = {"secrets": found[start:start + size], "totalSize": len(found)}
        if start + size < len(found):
            page["nextPageToken"] = str(start + size)
        return 200, page

    # -- versions -------------------------------------------------------------------------
    def add_version(self, request: Request):
        entry = self._secret(request)
        payload = request.json().get("payload") or {}
        data = base64.b64decode(payload.get("data") or "")
        if "dataCrc32c" in payload and int(payload["dataCrc32c"]) != google_crc32c.value(data):
            raise HttpError(400, "Checksum mismatch.", status="INVALID_ARGUMENT")
        if len(data) > 65536:
            raise HttpError(400, "Secret Payload cannot be larger than 64KiB.",
                            status="INVALID_ARGUMENT")
        with self._write:
            entry["versions"].append({"data": data, "createTime": now_rfc3339(),
                                      "state": "ENABLED"})
            number = len(entry["versions"])
        return 200, self._version_json(request.params["secret"], number,
                                       entry["versions"][-1])

    def _version(self, request: Request) -> tuple[int, dict]:
        entry = self._secret(request)
        wanted = request.params["version"]
        number = len(entry["versions"]) if wanted == "latest" else int(wanted)
        if not entry["versions"] or not 1 <= number <= len(entry["versions"]):
            raise HttpError(404, f"Secret Version [projects/{PROJECT_NUMBER}/secrets/"
                                 f"{request.params['secret']}/versions/{wanted}] not found.")
        return number, entry["versions"][number - 1]

    def access(self, request: Request):
        number, version = self._version(request)
        secret_id = request.params["secret"]
        if version["state"] != "ENABLED":
            raise HttpError(400, f"Secret Version [projects/{PROJECT_NUMBER}/secrets/"
                                 f"{secret_id}/versions/{number}] is in {version['state']} state.")
        crc = google_crc32c.value(version["data"])
        if secret_id in self.corrupt:
            self.corrupt.discard(secret_id)
            crc ^= 1
        return 200, {"name": f"projects/{PROJECT_NUMBER}/secrets/{secret_id}/versions/{number}",
                     "payload": {"data": base64.b64encode(version["data"]).decode(),
                                 "dataCrc32c": str(crc)}}

    def destroy(self, request: Request):
        number, version = self._version(request)
        version["state"], version["data"] = "DESTROYED", b""
        return 200, self._version_json(request.params["secret"], number, version)

    def list_versions(self, request: Request):
        entry = self._secret(request)
        versions = [self._version_json(request.params["secret"], n, v)
                    for n, v in enumerate(entry["versions"], 1)]
        return 200, {"versions": versions[::-1], "totalSize": len(versions)}  # newest first


def _matches(term: str, secret_id: str, entry: dict) -> bool:
    """One filter term: ``name:substring`` or ``labels.key=value`` (``:`` also accepted)."""
    field, sep, value = term.partition(":") if ":" in term and "=" not in term else \
        term.partition("=")
    if field == "name":
        return value in secret_id
    if field.startswith("labels."):
        return entry["labels"].get(field[len("labels."):]) == value
    raise HttpError(400, f"Invalid filter: {term}", status="INVALID_ARGUMENT")
