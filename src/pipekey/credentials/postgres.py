"""``type = "postgres_role"``: a PostgreSQL login role created for each run, dropped at close.

Mint, in one transaction on a connection of the admin's pool (so a failure leaves nothing):
``CREATE ROLE lk_<pipeline>_<run>_<tag> LOGIN PASSWORD <SCRAM verifier> VALID UNTIL now()+ttl
CONNECTION LIMIT n IN ROLE <member_of>`` and ``COMMENT ON ROLE ... IS 'pipekey run role;
...'``. The password is random (:mod:`secrets`), exists only in this process's memory and is
sent as a SCRAM-SHA-256 verifier computed here, so not even the server's statement log sees it.

Revoke (at run close, failed run or not): ``ALTER ROLE ... NOLOGIN``, terminate the role's
sessions, then ``REASSIGN OWNED BY`` it ``TO`` the first ``member_of`` role and ``DROP OWNED
BY`` it only if it owns or was granted anything, then ``DROP ROLE``. Sweep drops expired roles
that carry both the prefix and the comment marker, never any other role.

Many runs opening at once share a small pool of admin connections per admin DSN
(:data:`POOL_SIZE`), so they neither serialise on one connection nor open fifty.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeVar

from .. import metrics, redact
from ..connection import Connection
from ..errors import CredentialError, MissingDependency
from .base import Lease, PostgresRoleConfig, audit_credential

if TYPE_CHECKING:
    from .base import MintContext

__all__ = ["MARKER", "POOL_SIZE", "PostgresRoleMinter", "role_name", "scram_verifier"]

log = logging.getLogger("pipekey.credentials")
T = TypeVar("T")

#: how every role pipekey makes is commented; sweep drops only roles whose comment starts so
MARKER = "pipekey run role"
#: admin connections kept per admin DSN (mints and revokes beyond it wait, bounded)
POOL_SIZE = 4
#: seconds a mint or revoke waits for a pooled admin connection, and for sessions to end
WAIT_SECONDS = 30.0
#: libpq parameters an admin connection's ``extra`` may carry to the driver
#: ``sweep_on_open``: the least seconds between two sweeps of one minter
SWEEP_EVERY = 60.0
_LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "target_session_attrs",
                 "application_name")
#: the admin connection's ``extra`` fields the run's Connection inherits: where and how to
#: reach the server, never who the admin is (``sslcert``/``sslkey``/``sslpassword`` and any
#: other field are the admin's identity and stay with pipekey)
_RUN_EXTRAS = ("sslmode", "sslrootcert", "sslcrl", "target_session_attrs")
_MAX_NAME = 63  # NAMEDATALEN - 1, bytes
#: SQL: role ``r`` is a run login this definition made, as far as the catalog can say: the
#: prefix; a comment starting with the marker *and this definition's name* (so sweeping one
#: definition never reassigns another's objects to its own group); none of the attributes
#: pipekey never gives (a role someone made or raised by hand); and no member but the
#: admin itself (PostgreSQL 16 makes the creator one): a role used as a group is not a login
#: of a run. Parameters: len(prefix), prefix, marker prefix.
_OURS = ("(left(r.rolname, %s) = %s "
         "AND starts_with(coalesce(shobj_description(r.oid, 'pg_authid'), ''), %s) "
         "AND NOT (r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication "
         "OR r.rolbypassrls) "
         "AND NOT EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = r.oid "
         "AND m.member <> (SELECT oid FROM pg_roles WHERE rolname = current_user)))")


def _psycopg2() -> Any:
    try:
        import psycopg2
        import psycopg2.sql
    except ImportError:
        raise MissingDependency("credentials of type postgres_role", "postgres") from None
    return psycopg2


def role_name(prefix: str, pipeline: str, run_id: str) -> str:
    """A new, unique role name saying which pipeline and run it belongs to, at most 63 bytes:
    ``lk_<pipeline>_<run>_<8 hex>`` (lower case, ``[a-z0-9_]``; the run id keeps its tail,
    where ids differ)."""
    def clean(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")

    tag = secrets.token_hex(4)
    pipe = clean(pipeline)[:20] or "run"
    run = clean(run_id)
    if run.startswith(pipe + "_"):  # default run names repeat the pipeline's
        run = run[len(pipe) + 1:]
    budget = _MAX_NAME - len(prefix) - len(pipe) - len(tag) - 2
    run = run[-budget:].lstrip("_") if run else ""
    return f"{prefix}{pipe}_{run}_{tag}" if run else f"{prefix}{pipe}_{tag}"


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677), so the
    password itself never reaches the server."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
            f"{b64(hashlib.sha256(client_key).digest()).decode()}:{b64(server_key).decode()}")


def connect_kwargs(conn: Connection, timeout: int = 10) -> dict[str, Any]:
    """psycopg2.connect arguments for a pipekey Connection."""
    kwargs: dict[str, Any] = {"host": conn.host, "port": conn.port or 5432, "user": conn.login,
                              "password": conn.password, "dbname": conn.schema or "postgres",
                              "connect_timeout": timeout}
    kwargs.update({k: str(v) for k, v in conn.extra.items() if k in _LIBPQ_EXTRAS})
    return kwargs


class _Pool:
    """At most ``size`` connections to one admin DSN; a borrower waits (bounded) for one."""

    def __init__(self, kwargs: dict[str, Any], size: int) -> None:
        self._kwargs = kwargs
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self, definition: str) -> Iterator[Any]:
        if not self._slots.acquire(timeout=WAIT_SECONDS):
            raise CredentialError(definition, f"no admin connection free within "
                                              f"{WAIT_SECONDS:.0f} s ({POOL_SIZE} in use)")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = _connect(definition, self._kwargs)
            yield conn
            if conn.status != _psycopg2().extensions.STATUS_READY:
                conn.rollback()
            with self._lock:
                if not self._closed:  # else: replaced meanwhile; the finally closes it
                    self._idle.append(conn)
                    conn = None
        finally:
            if conn is not None:  # failed mid-use: do not hand a broken connection on
                conn.close()
            self._slots.release()

    def run(self, definition: str, action: Callable[[Any], T]) -> T:
        """``action(connection)`` on a pooled connection; once more on a fresh one if the
        server had closed the pooled one (a restart, an idle timeout). Every action is
        idempotent or one transaction, so the second attempt is safe."""
        for attempt in (1, 2):
            with self.connection(definition) as db:
                try:
                    return action(db)
                except CredentialError:
                    if attempt == 2 or not db.closed:
                        raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _CannotConnect(CredentialError):
    """The admin connection could not be opened (a rotated password, say)."""


def _connect(definition: str, kwargs: dict[str, Any]) -> Any:
    psycopg2 = _psycopg2()
    try:
        return psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        raise _CannotConnect(definition, "cannot connect to PostgreSQL as the admin "
                                          f"{kwargs['user']!r} at {kwargs['host']}:"
                                          f"{kwargs['port']}: {_said(exc)}") from None


def _said(exc: BaseException) -> str:
    """What PostgreSQL said, one line, scrubbed: the primary message only (never the
    statement, which psycopg2 may quote), with every registered value masked."""
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0:1]
    if isinstance(text, list):
        text = text[0] if text else type(exc).__name__
    return redact.redactor().redact(str(text).splitlines()[0])


_pools: dict[str, tuple[str, _Pool]] = {}  # DSN without password -> (its hash, pool)
_pools_lock = threading.Lock()


def _pool_for(kwargs: dict[str, Any]) -> _Pool:
    """The process's pool for one admin DSN. A rotated admin password replaces the pool (the
    old one's connections close as they come back), so pools do not accumulate."""
    where = repr(sorted((k, v) for k, v in kwargs.items() if k != "password"))
    identity = hashlib.sha256(repr(sorted(kwargs.items())).encode()).hexdigest()
    with _pools_lock:
        found = _pools.get(where)
        if found is not None and found[0] == identity:
            return found[1]
        pool = _Pool(kwargs, POOL_SIZE)
        _pools[where] = (identity, pool)
    if found is not None:
        found[1].close()
    return pool


def close_pools() -> None:
    """Close every idle admin connection of the process."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for _, pool in pools:
        pool.close()


class PostgresRoleMinter:
    """Mints one PostgreSQL login per run for definition ``name`` (see the module docstring).

    Args:
        name: the ``[credentials.NAME]`` definition.
        config: its configuration.
        context: where the admin connection is read from (and audit records go).
        env: the environment that fills ``{env}`` in ``admin``.
    """

    def __init__(self, name: str, config: PostgresRoleConfig, context: MintContext,
                 env: str) -> None:
        from ..policy import fill_template

        self.name = name
        self.config = config
        self.env = env
        self._context = context
        self.admin_key = fill_template(config.admin, {"env": env}, f"credentials.{name}.admin")
        self._issued: dict[str, dict[str, Any]] = {}  # login -> the admin kwargs that made it
        self._lock = threading.Lock()
        self._swept_at: float | None = None

    def __repr__(self) -> str:
        return f"<PostgresRoleMinter {self.name!r} admin={self.admin_key!r} env={self.env!r}>"

    @property
    def reads(self) -> list[str]:
        return [self.admin_key]

    # -- the contract -----------------------------------------------------------------------
    def mint(self, pipeline: str, run_id: str,
             inputs: Mapping[str, str] | None = None) -> Lease:
        admin = self._admin(inputs)
        kwargs = connect_kwargs(admin)
        pool = _pool_for(kwargs)
        if self.config.sweep_on_open and self._sweep_due():
            self._sweep_quietly(pool)
        start = time.perf_counter()
        login = role_name(self.config.prefix, pipeline, run_id)
        password = secrets.token_urlsafe(32)
        redact.register(password)
        expires_at = pool.run(self.name, lambda db: self._create(db, login, password,
                                                                 pipeline, run_id))
        with self._lock:
            self._issued[login] = kwargs
        latency = time.perf_counter() - start
        metrics.observe("credential_mint_seconds", latency, definition=self.name)
        metrics.incr("credentials_minted", definition=self.name)
        minted = Connection(conn_type=admin.conn_type or "postgres", host=admin.host,
                            port=admin.port, schema=admin.schema, login=login,
                            password=password,
                            extra={k: v for k, v in admin.extra.items() if k in _RUN_EXTRAS})
        return Lease(self.name, login, minted, expires_at)

    def renew(self, lease: Lease) -> Lease:
        psycopg2 = _psycopg2()
        sql = psycopg2.sql

        def extend(db: Any) -> float:
            try:
                with db, db.cursor() as cur:
                    self._check_ours(cur, lease.login)
                    until, epoch = self._expiry(cur)
                    cur.execute(sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
                        sql.Identifier(lease.login), sql.Literal(until)))
            except psycopg2.Error as exc:
                raise CredentialError(self.name, f"PostgreSQL refused to renew login "
                                                 f"{lease.login!r}: {_said(exc)}") from None
            return epoch

        return replace(lease, expires_at=self._as_admin(lease.login, extend))

    def revoke(self, lease: Lease) -> None:
        self._as_admin(lease.login, lambda db: self._drop(db, lease.login))
        with self._lock:
            self._issued.pop(lease.login, None)

    def sweep(self, dry_run: bool = False) -> list[str]:
        pool = _pool_for(connect_kwargs(self._admin(None)))
        return self._sweep(pool, dry_run)

    def close(self) -> None:
        """Nothing of its own to release: admin connections are pooled per process
        (:func:`close_pools`)."""

    # -- internals --------------------------------------------------------------------------
    def _admin(self, inputs: Mapping[str, str] | None) -> Connection:
        if inputs is not None and self.admin_key in inputs:
            value = inputs[self.admin_key]
        else:
            value = self._context.chain_for(self.env).get(self.admin_key).value
        redact.register(value)
        admin = Connection.from_value(value, conn_id=f"credentials.{self.name}.admin")
        for secret in admin.secret_values():
            redact.register(secret)
        return admin

    def _as_admin(self, login: str, action: Callable[[Any], T]) -> T:
        """``action`` as the admin that minted ``login``; if that admin can no longer connect
        (its password was rotated while the run lasted), as the admin the store holds now,
        so a rotation does not leave the run's login behind."""
        with self._lock:
            kwargs = self._issued.get(login)
        current = None
        if kwargs is not None:
            try:
                return _pool_for(kwargs).run(self.name, action)
            except _CannotConnect:
                current = connect_kwargs(self._admin(None))
                if current == kwargs:
                    raise
        pool = _pool_for(current or connect_kwargs(self._admin(None)))
        return pool.run(self.name, action)

    def _expiry(self, cur: Any) -> tuple[str, float]:
        cur.execute("SELECT to_char((now() + make_interval(secs => %s)) AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD HH24:MI:SS.US') || '+00', "
                    "extract(epoch FROM now() + make_interval(secs => %s))::float8",
                    (self.config.ttl, self.config.ttl))
        until, epoch = cur.fetchone()
        return until, float(epoch)

    def _create(self, db: Any, login: str, password: str, pipeline: str, run_id: str) -> float:
        psycopg2 = _psycopg2()
        sql = psycopg2.sql
        try:
            with db, db.cursor() as cur:  # one transaction: all of it, or nothing
                until, epoch = self._expiry(cur)
                cur.execute(sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                    "INHERIT PASSWORD {} VALID UNTIL {} CONNECTION LIMIT {} IN ROLE {}").format(
                    sql.Identifier(login), sql.Literal(scram_verifier(password)),
                    sql.Literal(until), sql.Literal(self.config.connection_limit),
                    sql.SQL(", ").join(sql.Identifier(r) for r in self.config.member_of)))
                marker = (f"{MARKER}; definition={self.name}; pipeline={pipeline}; "
                          f"run={run_id}; expires={until}")
                cur.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(
                    sql.Identifier(login), sql.Literal(marker)))
        except psycopg2.Error as exc:
            raise CredentialError(self.name, "PostgreSQL refused to create the run's login "
                                             f"(admin {self.admin_key!r}): {_said(exc)}") \
                from None
        return epoch

    def _check_ours(self, cur: Any, login: str) -> bool:
        """True if ``login`` exists and is pipekey's; False if it is gone; refuses (raises)
        a role pipekey did not make."""
        cur.execute("SELECT rolname, " + _OURS + " FROM pg_roles r WHERE rolname = %s",
                    (*self._ours_args(), login))
        row = cur.fetchone()
        if row is None:
            return False
        if not row[1]:
            raise CredentialError(self.name, f"role {login!r} is not a run login of this "
                                             "definition (prefix, marker, attributes or "
                                             "members differ); left alone")
        return True

    def _ours_args(self) -> tuple[Any, ...]:
        """The parameters of :data:`_OURS`, for this definition."""
        return (len(self.config.prefix), self.config.prefix,
                f"{MARKER}; definition={self.name}; ")

    def _drop(self, db: Any, login: str) -> bool:
        """End ``login``'s sessions and drop it; False if it was already gone."""
        psycopg2 = _psycopg2()
        sql = psycopg2.sql
        role = sql.Identifier(login)
        try:
            with db, db.cursor() as cur:
                if not self._check_ours(cur, login):
                    return False
                cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            self._end_sessions(db, login)
            with db, db.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_shdepend WHERE refclassid = "
                            "'pg_authid'::regclass AND refobjid = (SELECT oid FROM pg_roles "
                            "WHERE rolname = %s) AND deptype IN ('o', 'a', 'i', 'r')",
                            (login,))
                if cur.fetchone()[0]:  # it owns or was granted something: keep, then drop
                    # REASSIGN/DROP OWNED need the login's privileges: CREATEROLE may grant
                    # its own role to itself (PostgreSQL 16: it holds ADMIN OPTION on it)
                    cur.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
                    cur.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                        role, sql.Identifier(self.config.member_of[0])))
                    cur.execute(sql.SQL("DROP OWNED BY {}").format(role))
                cur.execute(sql.SQL("DROP ROLE {}").format(role))
        except psycopg2.Error as exc:
            raise CredentialError(self.name, f"PostgreSQL refused to drop login {login!r} "
                                             f"(it can no longer log in; it expires by itself; "
                                             f"`pipekey credentials sweep` retries): "
                                             f"{_said(exc)}") from None
        return True

    def _end_sessions(self, db: Any, login: str) -> None:
        """Terminate the role's sessions and wait (bounded) until they are gone."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            with db, db.cursor() as cur:
                cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE usename = %s AND pid <> pg_backend_pid()", (login,))
                left = cur.fetchone()[0]
            if not left or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def _sweep(self, pool: _Pool, dry_run: bool) -> list[str]:
        expired = pool.run(self.name, self._expired)
        if dry_run:
            return expired
        dropped = []
        for login in expired:
            if pool.run(self.name, functools.partial(self._drop_login, login)):
                dropped.append(login)
                audit_credential(self._context.audit, "sweep", self.name, "ok",
                                 detail=f"login {login}")
        metrics.incr("credentials_swept", len(dropped), definition=self.name)
        return dropped

    def _drop_login(self, login: str, db: Any) -> bool:
        return self._drop(db, login)

    def _expired(self, db: Any) -> list[str]:
        """Expired run logins of this definition (:data:`_OURS`)."""
        psycopg2 = _psycopg2()
        try:
            with db, db.cursor() as cur:
                cur.execute("SELECT rolname FROM pg_roles r WHERE " + _OURS +
                            " AND rolvaliduntil < now() ORDER BY rolname", self._ours_args())
                return [row[0] for row in cur.fetchall()]
        except psycopg2.Error as exc:
            raise CredentialError(self.name, f"cannot list expired run logins: {_said(exc)}") \
                from None

    def _sweep_due(self) -> bool:
        """``sweep_on_open`` sweeps at most once per :data:`SWEEP_EVERY` seconds per process,
        so fifty runs opening at once sweep once, not fifty times."""
        now = time.monotonic()
        with self._lock:
            if self._swept_at is not None and now - self._swept_at < SWEEP_EVERY:
                return False
            self._swept_at = now
            return True

    def _sweep_quietly(self, pool: _Pool) -> None:
        """``sweep_on_open``: housekeeping must not stop a run from opening."""
        try:
            self._sweep(pool, dry_run=False)
        except CredentialError as exc:
            log.warning("%s (sweep on open)", exc)
            audit_credential(self._context.audit, "sweep", self.name, "error", detail=str(exc))
