"""A Vault server speaking the HTTP API pipekey's ``vault`` backend uses.

Written from Vault's API docs: KV v2 (``/v1/<mount>/data``, ``/metadata``: read, write with
``options.cas``, soft delete, version metadata, LIST), KV v1 (``/v1/<mount>/<path>``), token
lookup-self / renew-self, logins for AppRole, Kubernetes and AWS IAM, and the database
secrets engine with leases (see "database engine" below). Errors use Vault's shape
``{"errors": [...]}``: 400 (check-and-set mismatch), 403 (permission denied, a bad or
expired token), 404 (no secret: ``{"errors": []}``), 429 (rate limit quota), 5xx.

Tokens expire after ``token_ttl`` seconds; ``revoke_tokens()`` invalidates every token
handed out (a 403 on the next call, as after a Vault restore or a revoked lease);
``deny(pattern)`` puts a path out of every login token's policy.

Database engine (mounts in ``db_mounts``, default ``database``), as Vault's PostgreSQL plugin
does it: ``<mount>/config/<name>`` stores a ``connection_url`` (with ``{{username}}`` and
``{{password}}``) and the admin login; ``<mount>/roles/<name>`` stores ``creation_statements``,
``revocation_statements``, ``renew_statements``, ``default_ttl`` and ``max_ttl``;
``GET <mount>/creds/<role>`` EXECUTES the creation statements against that PostgreSQL (psycopg2)
with ``{{name}}``, ``{{password}}`` and ``{{expiration}}`` filled, and answers a lease.
``sys/leases/renew`` runs the renew statements (default: ``VALID UNTIL`` the new expiry, capped
at ``max_ttl``), ``sys/leases/revoke`` the revocation statements (default: revoke and
``DROP ROLE``), and a reaper revokes leases whose TTL ran out, as Vault's expiration manager
does. ``LIST sys/leases/lookup/<prefix>`` needs sudo (the root token here). ``leases`` keeps
every lease, ``revoked`` and ``renewed`` the lease ids in order.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import itertools
import json
import secrets
import string
import threading
import time
import uuid
from typing import Any

from .http import FakeService, HttpError, Request, now_rfc3339

ROOT_TOKEN = "fake-vault-root-token"
ROLE_ID = "fake-role-id"
SECRET_ID = "fake-approle-secret-id"
K8S_JWT = "fake.k8s.jwt"
#: the mount regex of the database engine's routes: any mount but the KV ones, sys and auth
_DB_MOUNT = r"(?P<mount>(?!(?:secret|kv|sys|auth)/)[^/]+)"
#: Vault's default revocation: the revokes are best effort, the DROP ROLE must succeed
DEFAULT_REVOCATION = ['REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM "{{name}}"',
                      'REVOKE USAGE ON SCHEMA public FROM "{{name}}"',
                      'DROP ROLE IF EXISTS "{{name}}"']
DEFAULT_RENEW = ["ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"]


class FakeVault(FakeService):
    routes = [
        ("POST", r"/v1/auth/(?P<mount>[^/]+)/login", "login"),
        ("PUT", r"/v1/sys/leases/renew", "lease_renew"),
        ("PUT", r"/v1/sys/leases/revoke", "lease_revoke"),
        ("PUT", r"/v1/sys/leases/lookup", "lease_lookup"),
        ("LIST", r"/v1/sys/leases/lookup/(?P<prefix>.*)", "lease_list"),
        ("POST", rf"/v1/{_DB_MOUNT}/config/(?P<name>[^/]+)", "db_config"),
        ("PUT", rf"/v1/{_DB_MOUNT}/config/(?P<name>[^/]+)", "db_config"),
        ("POST", rf"/v1/{_DB_MOUNT}/roles/(?P<name>[^/]+)", "db_role"),
        ("PUT", rf"/v1/{_DB_MOUNT}/roles/(?P<name>[^/]+)", "db_role"),
        ("GET", rf"/v1/{_DB_MOUNT}/creds/(?P<name>[^/]+)", "db_creds"),
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
        self.db_mounts: set[str] = {"database"}
        self.db_configs: dict[tuple[str, str], dict] = {}
        self.db_roles: dict[tuple[str, str], dict] = {}
        self.leases: dict[str, dict] = {}  # lease id -> mount, role, username, times, state
        self.revoked: list[str] = []        # lease ids, in the order they were revoked
        #: the next this-many revocations fail as a busy database makes them fail (500, the
        #: lease stays live), e.g. concurrent REVOKEs on one schema's ACL
        self.failing_revocations = 0
        self.renewed: list[str] = []        # lease ids, once per renewal
        self._stopping = threading.Event()
        super().__init__()
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        self._stopping.set()
        self._reaper.join(timeout=5)
        super().stop()

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
        mount = request.params.get("mount")
        if route.startswith("db_") and mount not in self.db_mounts:
            raise HttpError(404, f"no handler for route \"{request.path[len('/v1/'):]}\". "
                                 "route entry not found.")
        token = request.headers.get("x-vault-token", "")
        with self.lock:
            info = self.tokens.get(token)
            if info is None or (info["expires"] is not None and info["expires"] < time.monotonic()):
                raise HttpError(403, "permission denied")
        api_path = request.path[len("/v1/"):]
        if token != ROOT_TOKEN and any(fnmatch.fnmatch(api_path, p) for p in self.denied):
            raise HttpError(403, "1 error occurred:\n\t* permission denied\n\n")
        if route == "lease_list" and token != ROOT_TOKEN:  # needs sudo
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
                                  "policies": ["default", "pipekey"], "display": mount}
            self.logins.append(mount)
        return 200, self._answer(auth=self._auth(token))

    def _auth(self, token: str) -> dict:
        return {"client_token": token, "accessor": uuid.uuid4().hex, "policies": ["default",
                "pipekey"], "token_policies": ["default", "pipekey"], "metadata": {},
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


    # -- database engine ------------------------------------------------------------------
    def db_config(self, request: Request):
        body = request.json()
        if body.get("plugin_name") != "postgresql-database-plugin":
            raise HttpError(400, f"unsupported plugin {body.get('plugin_name')!r} (the fake "
                                 "speaks postgresql-database-plugin)")
        allowed = body.get("allowed_roles") or []
        self.db_configs[(request.params["mount"], request.params["name"])] = {
            "connection_url": body["connection_url"], "username": body.get("username", ""),
            "password": body.get("password", ""),
            "allowed_roles": allowed.split(",") if isinstance(allowed, str) else list(allowed)}
        return 204, None

    def db_role(self, request: Request):
        body = request.json()
        statements = body.get("creation_statements")
        if not statements:
            raise HttpError(400, "creation_statements are required")
        self.db_roles[(request.params["mount"], request.params["name"])] = {
            "db_name": body["db_name"], "creation": _statements(statements),
            "revocation": _statements(body.get("revocation_statements")) or DEFAULT_REVOCATION,
            "renew": _statements(body.get("renew_statements")) or DEFAULT_RENEW,
            "default_ttl": int(body.get("default_ttl") or 3600),
            "max_ttl": int(body.get("max_ttl") or 86400)}
        return 204, None

    def db_creds(self, request: Request):
        mount, name = request.params["mount"], request.params["name"]
        role = self.db_roles.get((mount, name))
        if role is None:
            raise HttpError(400, f"unknown role: {name}")
        config = self.db_configs.get((mount, role["db_name"]))
        if config is None:
            raise HttpError(500, f"1 error occurred:\n\t* no connection {role['db_name']!r}\n\n")
        if "*" not in config["allowed_roles"] and name not in config["allowed_roles"]:
            raise HttpError(500, f"{name!r} is not an allowed role")
        display = self.tokens.get(request.params["token"], {}).get("display", "token")
        random20 = "".join(secrets.choice(string.ascii_letters + string.digits)
                           for _ in range(20))
        username = f"v-{display[:8]}-{name[:8]}-{random20}-{int(time.time())}"[:63]
        password = f"fake-dbpw-{secrets.token_hex(10)}"
        ttl, now = role["default_ttl"], time.time()
        self._execute(config, role["creation"], username, password, now + ttl)
        lease_id = f"{mount}/creds/{name}/{uuid.uuid4()}"
        with self.lock:
            self.leases[lease_id] = {"mount": mount, "role": name, "username": username,
                                     "issued": now, "expires": now + ttl,
                                     "max_expires": now + role["max_ttl"], "state": "live"}
        answer = self._answer({"username": username, "password": password})
        answer.update(lease_id=lease_id, lease_duration=ttl, renewable=True)
        return 200, answer

    def lease_renew(self, request: Request):
        body = request.json()
        lease_id = body.get("lease_id", "")
        lease, role, config = self._live_lease(lease_id)
        now = time.time()
        ttl = int(body.get("increment") or role["default_ttl"])
        ttl = max(0, min(ttl, int(lease["max_expires"] - now)))
        self._execute(config, role["renew"], lease["username"], None, now + ttl)
        with self.lock:
            lease["expires"] = now + ttl
            self.renewed.append(lease_id)
        answer = self._answer()
        answer.update(lease_id=lease_id, lease_duration=ttl, renewable=True)
        return 200, answer

    def lease_revoke(self, request: Request):
        lease_id = request.json().get("lease_id", "")
        with self.lock:
            failing, self.failing_revocations = (self.failing_revocations > 0,
                                                 max(0, self.failing_revocations - 1))
        if failing:
            raise HttpError(500, "failed to revoke lease: tuple concurrently updated")
        self._revoke(lease_id)
        return 204, None

    def lease_lookup(self, request: Request):
        lease_id = request.json().get("lease_id", "")
        lease = self.leases.get(lease_id)
        if lease is None or lease["state"] != "live":
            raise HttpError(400, "invalid lease")
        ttl = max(0, int(lease["expires"] - time.time()))
        return 200, self._answer({"id": lease_id, "issue_time": _rfc3339(lease["issued"]),
                                  "expire_time": _rfc3339(lease["expires"]),
                                  "last_renewal": None, "renewable": True, "ttl": ttl})

    def lease_list(self, request: Request):
        prefix = request.params["prefix"]
        with self.lock:
            keys = sorted(i[len(prefix):] for i, le in self.leases.items()
                          if i.startswith(prefix) and le["state"] == "live")
        if not keys:
            raise HttpError(404)
        return 200, self._answer({"keys": keys})

    def _live_lease(self, lease_id: str) -> tuple[dict, dict, dict]:
        lease = self.leases.get(lease_id)
        if lease is None or lease["state"] != "live":
            raise HttpError(400, "lease not found")
        role = self.db_roles[(lease["mount"], lease["role"])]
        return lease, role, self.db_configs[(lease["mount"], role["db_name"])]

    def _revoke(self, lease_id: str) -> None:
        """Run the role's revocation statements once; unknown or revoked leases: nothing."""
        with self.lock:
            lease = self.leases.get(lease_id)
            if lease is None or lease["state"] != "live":
                return
            lease["state"] = "revoking"
        role = self.db_roles[(lease["mount"], lease["role"])]
        config = self.db_configs[(lease["mount"], role["db_name"])]
        try:
            self._execute(config, role["revocation"], lease["username"], None, time.time(),
                          best_effort=role["revocation"] is DEFAULT_REVOCATION)
        except HttpError:
            with self.lock:
                lease["state"] = "live"  # Vault keeps the lease and retries the revocation
            raise
        with self.lock:
            lease["state"] = "revoked"
            self.revoked.append(lease_id)

    def _reap(self) -> None:
        """Revoke leases whose TTL passed, as Vault's expiration manager does."""
        while not self._stopping.wait(0.2):
            now = time.time()
            with self.lock:
                due = [i for i, le in self.leases.items()
                       if le["state"] == "live" and le["expires"] <= now]
            for lease_id in due:
                try:
                    self._revoke(lease_id)
                except HttpError:
                    pass  # tried again on the next pass

    @staticmethod
    def _execute(config: dict, statements: list[str], name: str, password: str | None,
                 expires: float, best_effort: bool = False) -> None:
        """Run ``statements`` with the templates filled, in one transaction, as the admin;
        ``best_effort``: errors of all but the last statement are ignored."""
        import psycopg2

        url = (config["connection_url"].replace("{{username}}", config["username"])
               .replace("{{password}}", config["password"]))
        fill = {"{{name}}": name, "{{username}}": name, "{{password}}": password or "",
                "{{expiration}}": dt.datetime.fromtimestamp(expires, dt.timezone.utc)
                .strftime("%Y-%m-%d %H:%M:%S+0000")}
        try:
            conn = psycopg2.connect(url, connect_timeout=10)
            try:
                with conn, conn.cursor() as cur:  # one transaction: all or nothing
                    for i, statement in enumerate(statements):
                        for needle, value in fill.items():
                            statement = statement.replace(needle, value)
                        if best_effort and i < len(statements) - 1:
                            cur.execute("SAVEPOINT best_effort")
                            try:
                                cur.execute(statement)
                            except psycopg2.Error:
                                cur.execute("ROLLBACK TO SAVEPOINT best_effort")
                        else:
                            cur.execute(statement)
            finally:
                conn.close()
        except psycopg2.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HttpError(500, f"1 error occurred:\n\t* pq: {first}\n\n") from None


def _statements(value: object) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _rfc3339(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
