"""A Vault server speaking the HTTP API latchkey's ``vault`` backend uses.

Written from Vault's API docs: KV v2 (``/v1/<mount>/data``, ``/metadata``: read, write with
``options.cas``, soft delete, version metadata, LIST), KV v1 (``/v1/<mount>/<path>``), token
lookup-self / renew-self, and logins for AppRole, Kubernetes and AWS IAM. Errors use Vault's
shape ``{"errors": [...]}``: 400 (check-and-set mismatch), 403 (permission denied, a bad or
expired token), 404 (no secret: ``{"errors": []}``), 429 (rate limit quota), 5xx.

Tokens expire after ``token_ttl`` seconds; ``revoke_tokens()`` invalidates every token
handed out (a 403 on the next call, as after a Vault restore or a revoked lease);
``deny(pattern)`` puts a path out of every login token's policy.
"""

from __future__ import annotations

import base64
import fnmatch
import itertools
import json
import threading
import time
import uuid
from typing import Any

from .http import FakeService, HttpError, Request, now_rfc3339

ROOT_TOKEN = "fake-vault-root-token"
ROLE_ID = "fake-role-id"
SECRET_ID = "fake-approle-secret-id"
K8S_JWT = "fake.k8s.jwt"


class FakeVault(FakeService):
    routes = [
        ("POST", r"/v1/auth/(?P<mount>[^/]+)/login", "login"),
        ("GET", r"/v1/auth/token/lookup-self", "lookup_self"),
        ("POST", r"/v1/auth/token/renew-self", "renew_self"),
        ("GET", r"/v1/(?P<mount>secret)/data/(?P<path>.+)", "v2_read"),
        ("POST", r"/v1/(?P<mount>secret)/data/(?P<path>.+)", "v2_write"),
        ("PUT", r"/v1/(?P<mount>secret)/data/(?P<path>.+)", "v2_write"),
        ("DELETE", r"/v1/(?P<mount>secret)/data/(?P<path>.+)", "v2_delete"),
        ("GET", r"/v1/(?P<mount>secret)/metadata/(?P<path>.*)", "v2_metadata"),
        ("LIST", r"/v1/(?P<mount>secret)/metadata/(?P<path>.*)", "v2_list"),
        ("DELETE", r"/v1/(?P<mount>secret)/metadata/(?P<path>.+)", "v2_destroy"),
        ("GET", r"/v1/(?P<mount>kv)/(?P<path>.*)", "v1_read"),
        ("LIST", r"/v1/(?P<mount>kv)/(?P<path>.*)", "v1_list"),
        ("POST", r"/v1/(?P<mount>kv)/(?P<path>.+)", "v1_write"),
        ("PUT", r"/v1/(?P<mount>kv)/(?P<path>.+)", "v1_write"),
        ("DELETE", r"/v1/(?P<mount>kv)/(?P<path>.+)", "v1_delete"),
    ]

    def __init__(self, token_ttl: int = 3600, renewable: bool = True) -> None:
        self.token_ttl = token_ttl
        self.renewable = renewable
        self.tokens: dict[str, dict] = {ROOT_TOKEN: {"expires": None, "policies": ["root"]}}
        self.denied: list[str] = []
        self.v2: dict[str, dict] = {}      # "mount/path" -> {"versions": {n: {...}}, "current": n}
        self.v1: dict[str, dict] = {}      # "mount/path" -> data
        self.logins: list[str] = []        # auth mount of every successful login
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        super().__init__()

    # -- test controls ----------------------------------------------------------------------
    def revoke_tokens(self) -> None:
        """Every token handed out by a login stops working (the root token stays)."""
        with self.lock:
            for token in [t for t in self.tokens if t != ROOT_TOKEN]:
                del self.tokens[token]

    def deny(self, pattern: str) -> None:
        """Requests to API paths matching ``pattern`` (``secret/data/x/*``) get 403."""
        self.denied.append(pattern)

    # -- shape ----------------------------------------------------------------------------
    def error_body(self, status: int, message: str, extra: dict) -> Any:
        if status == 404 and not message:
            return {"errors": []}
        return {"errors": [message or {403: "permission denied", 429: "rate limit quota "
                                       "exceeded", 503: "Vault is sealed"}.get(status, "error")]}

    def before(self, request: Request, route: str) -> None:
        if route == "login":
            return
        token = request.headers.get("x-vault-token", "")
        with self.lock:
            info = self.tokens.get(token)
            if info is None or (info["expires"] is not None and info["expires"] < time.monotonic()):
                raise HttpError(403, "permission denied")
        api_path = request.path[len("/v1/"):]
        if token != ROOT_TOKEN and any(fnmatch.fnmatch(api_path, p) for p in self.denied):
            raise HttpError(403, "1 error occurred:\n\t* permission denied\n\n")
        request.params["token"] = token

    @staticmethod
    def _answer(data: Any = None, auth: Any = None) -> dict:
        return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False,
                "lease_duration": 0, "data": data, "wrap_info": None, "warnings": None,
                "auth": auth}

    # -- auth -----------------------------------------------------------------------------
    def login(self, request: Request):
        body, mount = request.json(), request.params["mount"]
        if mount == "approle":
            ok = body.get("role_id") == ROLE_ID and body.get("secret_id") == SECRET_ID
        elif mount == "kubernetes":
            ok = body.get("jwt") == K8S_JWT and bool(body.get("role"))
        elif mount == "aws":
            ok = _valid_iam_request(body)
        else:
            raise HttpError(400, f"no handler for route \"auth/{mount}/login\"")
        if not ok:
            raise HttpError(400 if mount == "approle" else 403,
                            "invalid role or secret ID" if mount == "approle"
                            else "permission denied")
        token = f"hvs.fake-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        with self.lock:
            self.tokens[token] = {"expires": time.monotonic() + self.token_ttl,
                                  "policies": ["default", "latchkey"]}
            self.logins.append(mount)
        return 200, self._answer(auth=self._auth(token))

    def _auth(self, token: str) -> dict:
        return {"client_token": token, "accessor": uuid.uuid4().hex, "policies": ["default",
                "latchkey"], "token_policies": ["default", "latchkey"], "metadata": {},
                "lease_duration": self.token_ttl, "renewable": self.renewable,
                "entity_id": "", "token_type": "service", "orphan": True}

    def lookup_self(self, request: Request):
        token = request.params["token"]
        info = self.tokens[token]
        ttl = 0 if info["expires"] is None else max(0, int(info["expires"] - time.monotonic()))
        return 200, self._answer({"ttl": ttl, "renewable": info["expires"] is not None and
                                  self.renewable, "policies": info["policies"]})

    def renew_self(self, request: Request):
        token = request.params["token"]
        if not self.renewable:
            raise HttpError(400, "lease is not renewable")
        with self.lock:
            self.tokens[token]["expires"] = time.monotonic() + self.token_ttl
        return 200, self._answer(auth=self._auth(token))

    # -- KV v2 ----------------------------------------------------------------------------
    def _entry(self, request: Request) -> tuple[str, dict | None]:
        name = f"{request.params['mount']}/{request.params['path'].strip('/')}"
        return name, self.v2.get(name)

    @staticmethod
    def _version_meta(version: int, v: dict) -> dict:
        return {"created_time": v["created_time"], "custom_metadata": None,
                "deletion_time": v["deletion_time"], "destroyed": v["destroyed"],
                "version": version}

    def v2_read(self, request: Request):
        _, entry = self._entry(request)
        if entry is None:
            raise HttpError(404)
        with self._write_lock:  # a version and its number, as one
            number = int(request.query.get("version") or 0) or entry["current"]
            version = entry["versions"].get(number)
        if version is None:
            raise HttpError(404)
        meta = self._version_meta(number, version)
        if version["deletion_time"] or version["destroyed"]:
            return 404, self._answer({"data": None, "metadata": meta})
        return 200, self._answer({"data": version["data"], "metadata": meta})

    def v2_write(self, request: Request):
        name, _ = self._entry(request)
        body = request.json()
        if not isinstance(body.get("data"), dict):
            raise HttpError(400, "no data provided")
        with self._write_lock:
            entry = self.v2.get(name)
            current = entry["current"] if entry else 0
            cas = (body.get("options") or {}).get("cas")
            if cas is not None and int(cas) != current:
                raise HttpError(400, "check-and-set parameter did not match the current version")
            if entry is None:
                entry = self.v2[name] = {"versions": {}, "current": 0,
                                         "created_time": now_rfc3339()}
            number = current + 1
            entry["versions"][number] = {"data": body["data"], "created_time": now_rfc3339(),
                                         "deletion_time": "", "destroyed": False}
            entry["current"] = number
        return 200, self._answer(self._version_meta(number, entry["versions"][number]))

    def v2_delete(self, request: Request):
        _, entry = self._entry(request)
        if entry is not None:
            entry["versions"][entry["current"]]["deletion_time"] = now_rfc3339()
        return 204, None

    def v2_destroy(self, request: Request):
        name, _ = self._entry(request)
        self.v2.pop(name, None)
        return 204, None

    def v2_metadata(self, request: Request):
        if request.query.get("list") == "true":
            return self.v2_list(request)
        _, entry = self._entry(request)
        if entry is None:
            raise HttpError(404)
        versions = {str(n): {k: v[k] for k in ("created_time", "deletion_time", "destroyed")}
                    for n, v in entry["versions"].items()}
        return 200, self._answer({
            "cas_required": False, "created_time": entry["created_time"],
            "current_version": entry["current"], "delete_version_after": "0s",
            "max_versions": 0, "oldest_version": min(entry["versions"]),
            "updated_time": entry["versions"][entry["current"]]["created_time"],
            "custom_metadata": None, "versions": versions})

    def v2_list(self, request: Request):
        return self._list(self.v2, request)

    def _list(self, store: dict, request: Request):
        base = f"{request.params['mount']}/{request.params['path'].strip('/')}".rstrip("/") + "/"
        keys = set()
        for name in list(store):
            if name.startswith(base):
                rest = name[len(base):]
                head, sep, _ = rest.partition("/")
                keys.add(head + ("/" if sep else ""))
        if not keys:
            raise HttpError(404)
        return 200, self._answer({"keys": sorted(keys)})

    # -- KV v1 ----------------------------------------------------------------------------
    def v1_read(self, request: Request):
        if request.query.get("list") == "true":
            return self.v1_list(request)
        name = f"{request.params['mount']}/{request.params['path'].strip('/')}"
        if name not in self.v1:
            raise HttpError(404)
        return 200, self._answer(self.v1[name])

    def v1_list(self, request: Request):
        return self._list(self.v1, request)

    def v1_write(self, request: Request):
        self.v1[f"{request.params['mount']}/{request.params['path'].strip('/')}"] = request.json()
        return 204, None

    def v1_delete(self, request: Request):
        self.v1.pop(f"{request.params['mount']}/{request.params['path'].strip('/')}", None)
        return 204, None


def _valid_iam_request(body: dict) -> bool:
    """An ``aws`` login carries a signed STS GetCallerIdentity request (not checked against
    AWS here: the fake checks its shape and that it is SigV4-signed)."""
    try:
        url = base64.b64decode(body["iam_request_url"]).decode()
        payload = base64.b64decode(body["iam_request_body"]).decode()
        headers = json.loads(base64.b64decode(body["iam_request_headers"]))
    except (KeyError, ValueError):
        return False
    auth = headers.get("Authorization")
    auth = auth[0] if isinstance(auth, list) else auth
    return (body.get("iam_http_request_method") == "POST" and "sts" in url
            and "Action=GetCallerIdentity" in payload and bool(body.get("role"))
            and str(auth).startswith("AWS4-HMAC-SHA256"))
