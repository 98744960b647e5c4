"""What the three AWS backends share: clients, retries, counters, and error translation.

* boto3 is imported when a client is first needed; without it, ``MissingDependency`` prints
  ``pip install 'pipekey[aws]'``.
* Retries are botocore's own (``retry_mode = "standard"`` or ``"adaptive"``), with a connect
  and a read timeout on every call.
* ``stats`` counts calls, retries, throttles and errors separately from latency, from
  botocore's events (the ``needs-retry`` event sees every throttled attempt).
* AWS errors become pipekey errors naming the backend and the key: access denied is
  ``AccessDenied`` (authoritative), KMS failures say KMS, throttling that outlasted the
  retries says so, an unreachable endpoint is ``BackendUnavailable``.
"""

from __future__ import annotations

from typing import Any, Generic, Iterable, Literal, Sequence, TypeVar, overload

from .._sdk import boto3_module
from ..aws import assumed_role_session
from ..errors import BackendUnavailable, PipekeyError
from .aws_errors import AWS_ERRORS, DENIED_CODES, THROTTLING_CODES, error_code
from .base import BackendConfig
from .remote import RemoteBackend, describe_keys

__all__ = ["AWS_ERRORS", "DENIED_CODES", "AwsBackend", "AwsConfig", "THROTTLING_CODES",
           "boto3_module", "error_code"]

class AwsConfig(BackendConfig):
    """Connection settings every AWS backend accepts."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    role_arn: str | None = None
    role_external_id: str | None = None
    #: RoleSessionName of ``role_arn`` (default ``pipekey-backend-NAME``)
    role_session_name: str | None = None
    role_duration: int = 900
    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_concurrency: int = 8
    #: boto3's ``use_ssl`` and ``verify`` (a CA bundle path, or false), as Airflow's backends
    use_ssl: bool = True
    verify: bool | str | None = None


C = TypeVar("C", bound=AwsConfig)


class AwsBackend(RemoteBackend, Generic[C]):
    """Base of the AWS backends: one boto3 client per backend, made on first use.

    Generic in its config class, so ``self.config`` of ``SsmBackend`` is an ``SsmConfig``.
    """

    service: str = ""

    def __init__(self, name: str, config: C) -> None:
        super().__init__(name)
        self.config: C = config
        self.max_concurrency = config.max_concurrency
        self._clients: dict[str, Any] = {}

    # -- the client -----------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The boto3 client of this backend's service (made once, thread-safe)."""
        return self.client_for(self.service)

    def client_for(self, service: str) -> Any:
        """A boto3 client for ``service`` (``kms`` for envelope encryption, say)."""
        client = self._clients.get(service)
        if client is None:
            with self._lock:
                client = self._clients.get(service)
                if client is None:
                    client = self._clients[service] = self._make_client(service)
        return client

    def _make_client(self, service: str | None = None) -> Any:
        service = service or self.service
        boto3_module()  # without the aws extra: the pip line, before botocore's ImportError
        from botocore.exceptions import BotoCoreError, NoRegionError, ProfileNotFound

        try:
            return self._new_client(service)
        except NoRegionError:
            raise BackendUnavailable(
                self.name, f"no AWS region for {self.kind}: set AWS_REGION or region = "
                           f"\"...\" in [backends.{self.name}]") from None
        except ProfileNotFound as exc:
            raise BackendUnavailable(
                self.name, f"AWS profile {exc.kwargs.get('profile')!r} not found: fix profile = "
                           f"in [backends.{self.name}] or AWS_PROFILE") from None
        except BotoCoreError as exc:
            raise BackendUnavailable(self.name, f"cannot make an AWS {service} client "
                                                f"({type(exc).__name__})") from exc

    def _new_client(self, service: str) -> Any:
        boto3 = boto3_module()
        from botocore.config import Config

        session = boto3.Session(profile_name=self.config.profile, region_name=self.config.region)
        if self.config.role_arn:
            session = assumed_role_session(
                self.config.role_arn,
                self.config.role_session_name or f"pipekey-backend-{self.name}",
                base_session=session, external_id=self.config.role_external_id,
                duration=self.config.role_duration, region=self.config.region)
        # total_max_attempts counts attempts in all, as AWS_MAX_ATTEMPTS does
        config = Config(retries={"mode": self.config.retry_mode,
                                 "total_max_attempts": self.config.max_attempts},
                        connect_timeout=self.config.connect_timeout,
                        read_timeout=self.config.read_timeout,
                        max_pool_connections=max(10, self.config.max_concurrency * 2))
        client = session.client(service, endpoint_url=self.config.endpoint_url, config=config,
                                use_ssl=self.config.use_ssl, verify=self.config.verify)
        client.meta.events.register("needs-retry.*", self._on_needs_retry)
        return client

    def _on_needs_retry(self, response: Any = None, attempts: int | None = None,
                        **_: Any) -> None:
        if response is None:
            return
        code = (response[1] or {}).get("Error", {}).get("Code", "")
        if code in THROTTLING_CODES:
            self.count("throttles")

    def describe(self) -> str:
        where = self.config.endpoint_url or self.config.region or "default region"
        return f"{self.kind} ({where})"

    def close(self) -> None:
        with self._lock:
            self._clients.clear()
        super().close()

    # -- calls ----------------------------------------------------------------------------
    # Without ``missing`` (typed as the empty tuple) a call never answers None.
    @overload
    def call(self, operation: str, keys: Sequence[str] = (), missing: tuple[()] = (),
             service: str | None = None, **kwargs: Any) -> dict[str, Any]: ...

    @overload
    def call(self, operation: str, keys: Sequence[str] = (), missing: Iterable[str] = (),
             service: str | None = None, **kwargs: Any) -> dict[str, Any] | None: ...

    def call(self, operation: str, keys: Sequence[str] = (), missing: Iterable[str] = (),
             service: str | None = None, **kwargs: Any) -> dict[str, Any] | None:
        """Call ``operation`` on the client, counting it and translating its errors.

        Returns None when AWS answers with one of the ``missing`` error codes (the thing
        asked for does not exist: "absent", not a failure).
        """
        absent_codes = frozenset(missing)
        method = getattr(self.client_for(service or self.service), operation)
        response: dict[str, Any] | None = self.counted(
            operation, keys, method, absent=lambda exc: self.error_code(exc) in absent_codes,
            **kwargs)
        if response is None:
            return None
        retries = response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        if retries:
            self.count("retries", retries)
        return response

    def error_code(self, exc: BaseException) -> str:
        return error_code(exc)

    def translate(self, exc: Exception, operation: str, keys: Sequence[str]) -> PipekeyError:
        """An AWS error as a pipekey error naming this backend and the keys."""
        what = f"{operation} for {describe_keys(keys)}" if keys else operation
        return AWS_ERRORS.translate(exc, self.name, what, self.config.max_attempts)


