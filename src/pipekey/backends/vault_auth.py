"""Authentication for the ``vault`` backend: one small typed object per method, and the
token that every backend of the process talking to the same Vault with the same auth shares.

Secret material for a login (the token, the AppRole secret id, the service-account JWT) is
read from an environment variable or a file the manifest names, never from the manifest.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Union

from msgspec import Struct

from .._sdk import boto3_module, hvac_module
from ..errors import UsageError

__all__ = ["AppRoleAuth", "AwsIamAuth", "KubernetesAuth", "TokenAuth", "VaultAuth",
           "VaultLogin", "hvac_module"]

#: the share of a token's TTL after which it is renewed
RENEW_AT = 2 / 3
K8S_JWT = "/var/run/secrets/kubernetes.io/serviceaccount/token"


# -- authentication, one typed object per method ----------------------------------------------
class _Auth(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True, tag_field="method"):
    """A login method: ``auth = { method = "...", ... }``, a union tagged on ``method``."""

    @property
    def method(self) -> str:
        """The ``method`` this class is chosen by (its tag)."""
        return str(type(self).__struct_config__.tag)

    def login(self, client: Any) -> dict[str, Any]:
        """Log ``client`` (an hvac client) in; returns Vault's ``auth`` block."""
        raise NotImplementedError


def _read_secret_input(env: str | None, file: str | None, what: str) -> str:
    if file:
        try:
            return Path(file).expanduser().read_text().strip()
        except OSError as exc:
            raise UsageError(f"vault auth: cannot read the {what} file {file!r} "
                             f"({exc.strerror})") from None
    value = os.environ.get(env or "", "")
    if not value:
        raise UsageError(f"vault auth: no {what}: set ${env}" + (" or give a file" if env else ""))
    return value


class TokenAuth(_Auth, tag="token", frozen=True):
    """A Vault token from ``$token_env`` (default ``VAULT_TOKEN``) or ``token_file``."""

    token_env: str = "VAULT_TOKEN"
    token_file: str | None = None

    def login(self, client: Any) -> dict[str, Any]:
        client.token = _read_secret_input(self.token_env, self.token_file, "Vault token")
        data = client.auth.token.lookup_self()["data"]
        return {"lease_duration": data.get("ttl") or 0, "renewable": bool(data.get("renewable"))}


class AppRoleAuth(_Auth, tag="approle", frozen=True):
    """AppRole: ``role_id`` in the manifest, the secret id from ``$secret_id_env`` or a file."""

    role_id: str
    secret_id_env: str = "VAULT_SECRET_ID"
    secret_id_file: str | None = None
    mount: str = "approle"

    def login(self, client: Any) -> dict[str, Any]:
        secret_id = _read_secret_input(self.secret_id_env, self.secret_id_file, "AppRole secret id")
        auth: dict[str, Any] = client.auth.approle.login(self.role_id, secret_id,
                                                         mount_point=self.mount)["auth"]
        return auth


class KubernetesAuth(_Auth, tag="kubernetes", frozen=True):
    """Kubernetes: the pod's service-account token (``jwt_file``) for a Vault ``role``."""

    role: str
    jwt_file: str = K8S_JWT
    mount: str = "kubernetes"

    def login(self, client: Any) -> dict[str, Any]:
        jwt = _read_secret_input(None, self.jwt_file, "service-account token")
        auth: dict[str, Any] = client.auth.kubernetes.login(self.role, jwt,
                                                            mount_point=self.mount)["auth"]
        return auth


class AwsIamAuth(_Auth, tag="aws", frozen=True):
    """AWS IAM: a signed ``sts:GetCallerIdentity`` with the default boto3 credentials."""

    role: str
    mount: str = "aws"
    header_value: str | None = None
    region: str = "us-east-1"

    def login(self, client: Any) -> dict[str, Any]:
        creds = boto3_module().Session().get_credentials()
        if creds is None:
            raise UsageError("vault auth (aws): no AWS credentials found for the IAM login")
        frozen = creds.get_frozen_credentials()
        auth: dict[str, Any] = client.auth.aws.iam_login(
            frozen.access_key, frozen.secret_key, frozen.token, header_value=self.header_value,
            role=self.role, mount_point=self.mount, region=self.region)["auth"]
        return auth


VaultAuth = Union[TokenAuth, AppRoleAuth, KubernetesAuth, AwsIamAuth]


# -- one login per process ---------------------------------------------------------------------
class VaultLogin:
    """One Vault token shared by every backend with the same address, namespace and auth.

    Only the token is shared: each backend keeps its own clients (its own timeouts, retries
    and counters). ``token(client)`` returns a token valid for a while yet, renewing it or
    logging in (through ``client``) first when needed; ``relogin(client, token)`` logs in
    again after a 403, once for all the threads that saw that token fail.
    """

    _all: dict[tuple[Any, ...], "VaultLogin"] = {}
    _all_lock = threading.Lock()

    def __init__(self, auth: _Auth, clock: Callable[[], float] = time.monotonic) -> None:
        self._auth = auth
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self._renewable = False
        self.logins = 0

    @classmethod
    def shared(cls, key: tuple[Any, ...], auth: _Auth) -> "VaultLogin":
        with cls._all_lock:
            login = cls._all.get(key)
            if login is None:
                login = cls._all[key] = cls(auth)
            return login

    def token(self, client: Any) -> str:
        """A token valid for a while yet."""
        token = self._token
        if token is not None and self._clock() < self._renew_at:
            return token
        with self._lock:
            if self._token is None:
                self._login(client)
            elif self._clock() >= self._renew_at:
                self._renew(client)
            assert self._token is not None
            return self._token

    def relogin(self, client: Any, failed_token: str) -> None:
        """Log in again, unless another thread already replaced ``failed_token``."""
        with self._lock:
            if self._token == failed_token:
                self._login(client)

    def _login(self, client: Any) -> None:
        auth = self._auth.login(client)
        self._token = auth.get("client_token") or client.token
        self.logins += 1
        self._schedule(auth)

    def _renew(self, client: Any) -> None:
        hvac = hvac_module()
        if not self._renewable:
            self._login(client)
            return
        client.token = self._token
        try:
            self._schedule(client.auth.token.renew_self()["auth"])
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
            self._login(client)  # past its max TTL, or revoked: a fresh login

    def _schedule(self, auth: dict[str, Any]) -> None:
        ttl = float(auth.get("lease_duration") or 0)
        self._renewable = bool(auth.get("renewable"))
        self._renew_at = float("inf") if ttl <= 0 else self._clock() + ttl * RENEW_AT
