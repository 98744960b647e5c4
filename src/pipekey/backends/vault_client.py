"""Talking to Vault: the hvac client of each thread over one shared HTTP session (GET and
LIST retried by urllib3 on 429/5xx, ``Retry-After`` honoured), the shared login, one new
login on a 403, and hvac's errors as pipekey's (``VAULT_ERRORS``).

:class:`VaultClient` is the part of :class:`pipekey.backends.vault.VaultBackend` that talks to
Vault; the backend maps keys to paths and documents and reads and writes them.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import BackendUnavailable, PipekeyError
from .remote import Cause, ErrorRow, ErrorTable, RemoteBackend, describe_keys
from .vault_auth import VaultLogin, hvac_module

if TYPE_CHECKING:
    from .vault import VaultConfig

__all__ = ["VAULT_ERRORS", "VaultClient"]


def _counting_retry(config: VaultConfig, on_retry: Callable[[int | None], None]) -> Any:
    from urllib3.util.retry import Retry

    class CountingRetry(Retry):
        def increment(self, *args: Any, **kw: Any) -> CountingRetry:
            new = super().increment(*args, **kw)
            response = kw.get("response") or (args[2] if len(args) > 2 else None)
            on_retry(getattr(response, "status", None))
            return new

    return CountingRetry(total=max(0, config.max_attempts - 1), backoff_factor=0.2,
                         backoff_max=5, status_forcelist=(429, 500, 502, 503, 504),
                         allowed_methods=frozenset({"GET", "LIST", "HEAD"}),
                         respect_retry_after_header=True, raise_on_status=False)


class VaultClient(RemoteBackend):
    """A remote backend that talks to Vault through hvac (the client half of
    :class:`~pipekey.backends.vault.VaultBackend`)."""

    config: VaultConfig
    url: str
    namespace: str | None
    max_concurrency: int
    _login: VaultLogin | None
    _session: Any
    _local: threading.local

    # -- the client -----------------------------------------------------------------------
    @property
    def login(self) -> VaultLogin:
        if self._login is None:
            key = (self.url, self.namespace, self.config.auth)
            self._login = VaultLogin.shared(key, self.config.auth)
        return self._login

    def _make_client(self) -> Any:
        """This thread's hvac client: its own token slot, this backend's shared session."""
        hvac = hvac_module()
        import requests
        from requests.adapters import HTTPAdapter

        with self._lock:
            if self._session is None:
                session = requests.Session()
                adapter = HTTPAdapter(max_retries=_counting_retry(self.config, self._on_retry),
                                      pool_maxsize=max(10, self.max_concurrency * 2))
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._session = session
        verify: bool | str = self.config.ca_bundle or os.environ.get("VAULT_CACERT") or True
        return hvac.Client(url=self.url, namespace=self.namespace, session=self._session,
                           timeout=self.config.timeout, verify=verify)

    @property
    def client(self) -> Any:
        """An hvac client for this thread (a token is per client, and threads may hold
        different ones for a moment while the token is replaced)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make_client()
        return client

    def _on_retry(self, status: int | None) -> None:
        self.count("retries")
        if status == 429:
            self.count("throttles")

    def vault(self, what: str, keys: Sequence[str], fn: Callable[[Any], Any],
              absent: bool = True) -> Any:
        """Run ``fn(client)``: counted, one new login on 403, 404 as None when ``absent``."""
        hvac = hvac_module()

        def attempt() -> Any:
            client = self.client
            client.token = token = self._token(client)
            try:
                return fn(client)
            except hvac.exceptions.Forbidden:
                self._token(client, relogin=token)  # a token re-read, for the token method
                client.token = self._token(client)
                return fn(client)

        def missing(exc: Exception) -> bool:
            return absent and isinstance(exc, hvac.exceptions.InvalidPath)

        return self.counted(what, keys, attempt, absent=missing)

    def _token(self, client: Any, relogin: str | None = None) -> str:
        """The shared token (after a new login when ``relogin`` is the token that failed);
        a refused login is worded as one, not as a failure of the read that needed it."""
        hvac = hvac_module()
        try:
            if relogin is not None:
                self.login.relogin(client, relogin)
            return self.login.token(client)
        except hvac.exceptions.VaultError as exc:
            raise BackendUnavailable(self.name, f"Vault refused the {self.config.auth.method} "
                                                f"login ({_label(exc, hvac)})") from exc

    def translate(self, exc: Exception, what: str, keys: Sequence[str]) -> PipekeyError:
        where = f"{what} for {describe_keys(keys)}" if keys else what
        return VAULT_ERRORS.translate(exc, self.name, where, self.config.max_attempts)


def _label(exc: Exception, hvac: Any = None) -> str:
    """``HTTP 503`` for hvac's exception classes (they keep no status code)."""
    hvac = hvac or hvac_module()
    status = {hvac.exceptions.InvalidRequest: 400, hvac.exceptions.Unauthorized: 401,
              hvac.exceptions.Forbidden: 403, hvac.exceptions.InvalidPath: 404,
              hvac.exceptions.RateLimitExceeded: 429, hvac.exceptions.InternalServerError: 500,
              hvac.exceptions.BadGateway: 502, hvac.exceptions.VaultDown: 503}.get(type(exc))
    return f"HTTP {status}" if status else type(exc).__name__


def _vault_rows() -> Sequence[ErrorRow]:
    errors = hvac_module().exceptions
    return (
        (lambda e: isinstance(e, errors.Forbidden), Cause.DENIED, None),
        (lambda e: isinstance(e, errors.RateLimitExceeded), Cause.THROTTLED, None),
        (lambda e: isinstance(e, errors.VaultError), Cause.FAILED, None),
    )


#: hvac's errors as pipekey's, by exception class (its classes stand for HTTP statuses)
VAULT_ERRORS = ErrorTable("Vault", _vault_rows, _label)
