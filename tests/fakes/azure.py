"""An Azure Key Vault (secrets) server speaking the REST API the azure-keyvault-secrets SDK
uses, over TLS (the SDK sends bearer tokens only over https), with the Microsoft identity
platform endpoints azure-identity's ``ClientSecretCredential`` (MSAL) calls.

Written from the Key Vault REST reference: ``Set Secret`` (PUT), ``Get Secret`` (a version or
the current one), ``Get Secrets`` and ``Get Secret Versions`` (paged with ``nextLink``),
``Delete Secret`` (soft delete), ``Get/Recover/Purge Deleted Secret``. Authentication is
Key Vault's challenge: a request without a token gets 401 with ``WWW-Authenticate: Bearer
authorization=..., resource=...``; the token comes from ``/{tenant}/oauth2/v2.0/token``
(client credentials). Errors use Key Vault's shape ``{"error": {"code", "message"}}``: 401
Unauthorized, 403 Forbidden, 404 SecretNotFound, 409 Conflict (a deleted, recoverable name),
429 Throttled with Retry-After, 5xx. Names are case-insensitive, as in Key Vault.
"""

from __future__ import annotations

import fnmatch
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from .http import FakeService, HttpError, Request

TENANT = "fake-tenant"
CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-value"
NAME = re.compile(r"[0-9a-zA-Z-]{1,127}\Z")
CODES = {400: "BadParameter", 401: "Unauthorized", 403: "Forbidden", 404: "SecretNotFound",
         409: "Conflict", 429: "Throttled", 500: "InternalServerError",
         503: "ServiceUnavailable"}
PAGE = 25


class FakeKeyVault(FakeService):
    routes = [
        ("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", "openid"),
        ("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", "token"),
        ("PUT", r"/secrets/(?P<name>[^/]+)", "set_secret"),
        ("GET", r"/secrets/(?P<name>[^/]+)/versions", "list_versions"),
        ("GET", r"/secrets/(?P<name>[^/]+)/?(?P<version>[^/]*)", "get_secret"),
        ("DELETE", r"/secrets/(?P<name>[^/]+)", "delete_secret"),
        ("GET", r"/secrets", "list_secrets"),
        ("GET", r"/deletedsecrets/(?P<name>[^/]+)", "get_deleted"),
        ("POST", r"/deletedsecrets/(?P<name>[^/]+)/recover", "recover"),
        ("DELETE", r"/deletedsecrets/(?P<name>[^/]+)", "purge"),
    ]

    def __init__(self, cert: tuple[Path, Path]) -> None:
        self.secrets: dict[str, dict] = {}   # lowercased name -> {"name", "versions": [...]}
        self.deleted: dict[str, dict] = {}
        self.tokens: set[str] = set()
        self.denied: list[str] = []
        self._write = threading.Lock()
        super().__init__(cert)

    def deny(self, pattern: str) -> None:
        """Secret names matching ``pattern`` answer 403 Forbidden."""
        self.denied.append(pattern)

    def error_body(self, status: int, message: str, extra: dict) -> Any:
        body = {"code": extra.get("code") or CODES.get(status, "Error"),
                "message": message or CODES.get(status, "error")}
        if extra.get("inner"):
            body["innererror"] = {"code": extra["inner"]}
        return {"error": body}

    def before(self, request: Request, route: str) -> None:
        if route in ("openid", "token"):
            return
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            challenge = (f'Bearer authorization="{self.url}/{TENANT}", '
                         f'resource="https://vault.azure.net"')
            raise HttpError(401, "AKV10000: Request is missing a Bearer or PoP token.",
                            headers={"WWW-Authenticate": challenge})
        name = request.params.get("name", "")
        if name and any(fnmatch.fnmatch(name.lower(), p) for p in self.denied):
            raise HttpError(403, "The user, group or application does not have secrets get "
                                 "permission on key vault 'fake;location=local'.",
                            inner="AccessDenied")
        if name and not NAME.match(name):
            raise HttpError(400, "The request URI contains an invalid name: "
                                 f"{name}")

    # -- identity platform (what MSAL asks for) --------------------------------------------
    def openid(self, request: Request):
        base = f"{self.url}/{request.params['tenant']}"
        return 200, {"token_endpoint": f"{base}/oauth2/v2.0/token",
                     "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                     "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                     "issuer": f"{base}/v2.0", "tenant_region_scope": None,
                     "token_endpoint_auth_methods_supported": ["client_secret_post"],
                     "response_types_supported": ["code", "token"]}

    def token(self, request: Request):
        form = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            raise HttpError(401, "AADSTS7000215: Invalid client secret provided.",
                            code="invalid_client")
        token = f"fake-aad-token-{uuid.uuid4().hex}"
        self.tokens.add(token)
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                     "access_token": token}

    # -- secrets --------------------------------------------------------------------------
    def _bundle(self, entry: dict, version: dict, with_value: bool = True) -> dict:
        body = {"id": f"{self.url}/secrets/{entry['name']}/{version['id']}",
                "attributes": {"enabled": True, "created": version["created"],
                               "updated": version["created"],
                               "recoveryLevel": "Recoverable+Purgeable",
                               "recoverableDays": 90},
                "tags": version["tags"]}
        if version.get("contentType"):
            body["contentType"] = version["contentType"]
        if with_value:
            body["value"] = version["value"]
        return body

    def set_secret(self, request: Request):
        name = request.params["name"]
        body = request.json()
        if not isinstance(body.get("value"), str):
            raise HttpError(400, "Property 'value' is required.")
        if len(body["value"].encode()) > 25 * 1024:
            raise HttpError(400, "Secret value is too large. The maximum size is 25 KB.")
        with self._write:
            if name.lower() in self.deleted:
                raise HttpError(409, f"Secret {name} is currently in a deleted but recoverable "
                                     "state, and its name cannot be reused; in this state, the "
                                     "secret can only be recovered or purged.",
                                inner="ObjectIsDeletedButRecoverable")
            entry = self.secrets.setdefault(name.lower(), {"name": name, "versions": []})
            version = {"id": uuid.uuid4().hex, "value": body["value"],
                       "created": int(time.time()), "tags": body.get("tags") or {},
                       "contentType": body.get("contentType")}
            entry["versions"].append(version)
        return 200, self._bundle(entry, version)

    def _entry(self, request: Request) -> dict:
        entry = self.secrets.get(request.params["name"].lower())
        if entry is None:
            raise HttpError(404, f"A secret with (name/id) {request.params['name']} was not "
                                 "found in this key vault.")
        return entry

    def get_secret(self, request: Request):
        entry = self._entry(request)
        wanted = request.params.get("version") or ""
        if not wanted:
            return 200, self._bundle(entry, entry["versions"][-1])
        for version in entry["versions"]:
            if version["id"] == wanted:
                return 200, self._bundle(entry, version)
        raise HttpError(404, f"A secret with (name/id) {entry['name']}/{wanted} was not found "
                             "in this key vault.")

    def _page(self, items: list[dict], request: Request, path: str):
        start = int(request.query.get("$skiptoken") or 0)
        size = min(int(request.query.get("maxresults") or PAGE), PAGE)
        page = items[start:start + size]
        more = start + size < len(items)
        link = (f"{self.url}{path}?api-version={request.query.get('api-version', '7.5')}"
                f"&$skiptoken={start + size}&maxresults={size}") if more else None
        return 200, {"value": page, "nextLink": link}

    def list_secrets(self, request: Request):
        items = [self._bundle(e, e["versions"][-1], with_value=False)
                 for _, e in sorted(self.secrets.items())]
        for item in items:
            item["id"] = item["id"].rsplit("/", 1)[0]  # list items name the secret only
        return self._page(items, request, "/secrets")

    def list_versions(self, request: Request):
        entry = self._entry(request)
        items = [self._bundle(entry, v, with_value=False) for v in entry["versions"]]
        return self._page(items[::-1], request, f"/secrets/{entry['name']}/versions")

    def delete_secret(self, request: Request):
        with self._write:
            entry = self._entry(request)
            del self.secrets[entry["name"].lower()]
            self.deleted[entry["name"].lower()] = entry
        return 200, self._deleted_bundle(entry)

    def _deleted_bundle(self, entry: dict) -> dict:
        body = self._bundle(entry, entry["versions"][-1])
        body.update({"recoveryId": f"{self.url}/deletedsecrets/{entry['name']}",
                     "deletedDate": int(time.time()),
                     "scheduledPurgeDate": int(time.time()) + 90 * 86400})
        return body

    def _deleted_entry(self, request: Request) -> dict:
        entry = self.deleted.get(request.params["name"].lower())
        if entry is None:
            raise HttpError(404, f"Deleted Secret not found: {request.params['name']}",
                            code="SecretNotFound")
        return entry

    def get_deleted(self, request: Request):
        return 200, self._deleted_bundle(self._deleted_entry(request))

    def recover(self, request: Request):
        with self._write:
            entry = self._deleted_entry(request)
            del self.deleted[entry["name"].lower()]
            self.secrets[entry["name"].lower()] = entry
        return 200, self._bundle(entry, entry["versions"][-1])

    def purge(self, request: Request):
        self._deleted_entry(request)
        del self.deleted[request.params["name"].lower()]
        return 204, None
