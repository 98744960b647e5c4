"""What a run builds from its values: connections (mapped, and minted per run with their
leases), the AWS session of the pipeline's role, and the environment for a child process.

:class:`RunConnections` is a part of :class:`pipekey.run.Run`, kept apart so the run itself
holds its lifecycle and reads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, cast

from .announce import announce
from .errors import UsageError

if TYPE_CHECKING:
    from .aws import RunSession
    from .connection import Connection
    from .credentials.base import Lease
    from .credentials.leases import RunLeases
    from .manifest import PipelineConfig
    from .run import Run

__all__ = ["CONNECTION", "RunConnections"]

#: a run's name for its connection NAME in preflight and refresh: ``connection:NAME``
CONNECTION = "connection:"


class RunConnections:
    """Connections, leases, the AWS session and the child environment of a run."""

    if TYPE_CHECKING:
        pipeline: str
        name: str
        _config: PipelineConfig
        _leases: RunLeases
        _lock: threading.Lock
        _connections: dict[str, Connection]
        _aws: RunSession | None

        @property
        def connection_keys(self) -> Mapping[str, str]: ...

        @property
        def connection_names(self) -> list[str]: ...

        def get(self, key: str) -> str: ...

        def _check_open(self) -> None: ...

    def lease(self, name: str) -> "Lease":
        """The lease behind the minted connection ``name`` (its login, its expiry).

        Raises:
            UsageError: ``name`` is not a connection minted per run.
        """
        self._check_open()
        return self._leases.get(name)

    def renew(self, name: str) -> "Lease":
        """Extend the minted connection ``name`` by its definition's ttl (for runs longer
        than it). Returns the renewed lease; the Connection stays the same."""
        self._check_open()
        return self._leases.renew(name)

    def hand_over_leases(self) -> dict[str, "Lease"]:
        """The run's minted logins, handed to the caller: closing the run no longer revokes
        them (the broker hands them to the worker, whose run's close revokes them)."""
        self._check_open()
        return self._leases.detach()

    def minter_reads(self, definition: str) -> list[str]:
        """The keys credential ``definition`` reads from the chain (names only)."""
        return self._leases.reads_of(definition)

    def mint_for_check(self, name: str) -> "tuple[Lease, Callable[[], None]]":
        """Mint the connection ``name`` without opening the run (``pipekey check --connect``);
        returns the lease and the function that revokes it. Audited like a run's mint."""
        return self._leases.mint_detached(name)

    def connection(self, name: str) -> "Connection":
        """The connection the pipeline maps ``name`` to, parsed (URI or JSON form).

        Raises:
            UsageError: the pipeline maps no connection of that name.
            InvalidConnection: the stored value does not parse (names the field, not the value).
        """
        parsed = self._connections.get(name)
        if parsed is not None:
            return parsed
        self._check_open()
        key = self.connection_keys.get(name)
        if key is None:
            raise UsageError(f"pipeline {self.pipeline!r} has no connection {name!r} "
                             f"(its connections: {sorted(self.connection_names)})")
        from .connection import Connection

        parsed = Connection.from_value(self.get(key), conn_id=name)
        announce(*parsed.secret_values())
        with self._lock:
            self._check_open()
            self._connections[name] = parsed
        return parsed

    def aws_session(self) -> Any:
        """A boto3 Session acting as the pipeline's ``aws_role``, for this run alone
        (:class:`pipekey.aws.RunSession`).

        The role is assumed on first use with a session name made of the pipeline and the
        run name, and session tags ``pipekey:pipeline`` / ``pipekey:run`` plus the
        manifest's; credentials refresh themselves before expiry.

        Raises:
            UsageError: the pipeline has no ``aws_role``.
            AccessDenied: STS refused the role.
        """
        self._check_open()
        role = self._config.aws_role
        if role is None:
            raise UsageError(f"pipeline {self.pipeline!r} has no aws_role in the manifest")
        with self._lock:
            if self._aws is None:
                from .aws import RunSession  # boto3 only for runs that use a role

                self._aws = RunSession(role, self.pipeline, self.name)
            session = self._aws
        return session.get()

    def env(self) -> dict[str, str]:
        """Environment variables for a child process: each resolved secret under its name in
        ``env_vars``, else its name in upper snake case; each connection as
        ``AIRFLOW_CONN_<NAME>`` (or its ``env_vars`` name) holding its Airflow URI; and with
        an ``aws_role``, the role's temporary ``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``
        (:func:`pipekey.childenv.run_environment`)."""
        self._check_open()
        from .childenv import run_environment

        return run_environment(cast("Run", self))

    @property
    def has_aws_role(self) -> bool:
        return self._config.aws_role is not None
