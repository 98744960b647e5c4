"""The drop-in for Airflow's AWS secrets backends: their ``backend_kwargs``, their names,
their answers.

``PipekeySecretsBackend`` given the ``backend_kwargs`` of Airflow's
``SystemsManagerParameterStoreBackend`` (``"compat": "ssm"``) or ``SecretsManagerBackend``
(``"compat": "secrets_manager"``), verbatim, needs no manifest: it reads the names Airflow's
backend reads (``connections_prefix`` / ``variables_prefix`` / ``config_prefix``, ``None``
disabling a kind; the ``*_lookup_pattern``; Secrets Manager's ``sep``; team-scoped names
``<prefix>/<team>--<id>`` first, by :func:`pipekey.policy.airflow_names`) and returns what it
returns, ``None`` for a missing key. Secrets Manager connections stored as JSON with Airflow's
alias words (and ``extra_conn_words``) come back in Airflow's JSON form, as Airflow rewrites
them. What pipekey adds: the team-scoped and the plain name read in one call, the default
cache, masking of everything served, the audit log (``"audit": {...}``, a manifest's
``[audit]`` table), and, in a pipekey run, the run's values. docs/airflow.md ("Switch from
Airflow's backend") lists the documented differences. With ``"mode": "observe"`` (an
``"audit"`` sink required) the answers stay the same and each connection or variable lookup
the store is asked for is also one ``observe`` audit event, with what enforcement under
``"manifest"`` (if given; else no pipelines) would decide (:class:`CompatObserver`).

The AWS settings map onto pipekey's AWS backends: ``region_name``, ``profile_name``,
``role_arn`` (assumed with STS, refreshed), ``assume_role_kwargs`` (``ExternalId``,
``RoleSessionName``, ``DurationSeconds``), ``endpoint_url``, ``use_ssl``, ``verify``.
Static keys in ``backend_kwargs`` are refused (use the instance's role or the environment).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..audit import AuditEvent
from ..connection_words import standardize, words
from ..errors import InvalidKey, UsageError
from ..keys import validate_key
from ..manifest import parse_manifest
from ..policy import AIRFLOW_TEAM_SEP, airflow_names
from ..run import current
from ._airflow_mode import airflow_conf

if TYPE_CHECKING:
    from ..client import Pipekey
    from ._airflow_observe import CompatObserver

__all__ = ["KINDS", "CompatReader", "compat_kind"]

log = logging.getLogger("pipekey")

#: ``compat`` -> Airflow's default prefixes of that backend
KINDS: dict[str, dict[str, str]] = {
    "ssm": {"connection": "/airflow/connections", "variable": "/airflow/variables",
            "config": "/airflow/config"},
    "secrets_manager": {"connection": "airflow/connections", "variable": "airflow/variables",
                        "config": "airflow/config"},
}
_ARG = {"connection": "connections", "variable": "variables", "config": "config"}
_PREFIXES = {f"{_ARG[k]}_prefix" for k in _ARG}
_PATTERNS = {f"{_ARG[k]}_lookup_pattern" for k in _ARG}
#: Airflow's AWS settings -> pipekey's AWS backend fields
_AWS = {"region_name": "region", "profile_name": "profile", "role_arn": "role_arn",
        "endpoint_url": "endpoint_url", "use_ssl": "use_ssl", "verify": "verify"}
_ASSUME = {"ExternalId": "role_external_id", "RoleSessionName": "role_session_name",
           "DurationSeconds": "role_duration"}
#: accepted and without effect, as in Airflow's backends today
_IGNORED = {"api_version", "full_url_mode", "assume_role_method"}
_SECRETS_MANAGER_ONLY = {"sep", "extra_conn_words", "full_url_mode"}
_AIRFLOW_ONLY = _PATTERNS | set(_AWS) | _IGNORED | _SECRETS_MANAGER_ONLY | {"assume_role_kwargs"}
_STATIC_KEYS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
#: pipekey's own keys the drop-in alone takes (a manifest's [audit] table, a backend's cache)
_COMPAT_OWN = {"cache", "audit"}


def compat_kind(compat: str | None, given: Mapping[str, Any],
                airflow_kwargs: Mapping[str, Any]) -> str | None:
    """Which Airflow backend ``backend_kwargs`` are for: ``compat`` if given, else recognised
    (Secrets Manager's own ``sep``/``extra_conn_words``; a prefix with SSM's leading ``/``);
    None for pipekey's own kwargs.

    Raises:
        UsageError: an unknown ``compat`` or kwarg, or Airflow's kwargs with no way to tell
            which backend they are for.
    """
    own = set(airflow_kwargs) & _COMPAT_OWN
    unknown = sorted(set(airflow_kwargs) - _AIRFLOW_ONLY - _STATIC_KEYS - own)
    if unknown:
        raise UsageError(f"PipekeySecretsBackend: unknown backend_kwargs {unknown} (pipekey's "
                         "own, or those of Airflow's SSM / Secrets Manager backends with "
                         "\"compat\": \"ssm\" or \"secrets_manager\")")
    if compat is not None:
        if compat not in KINDS:
            raise UsageError(f"PipekeySecretsBackend: compat is one of {sorted(KINDS)}, "
                             f"got {compat!r}")
        return compat
    airflow_kwargs = {k: v for k, v in airflow_kwargs.items() if k not in own}
    if set(airflow_kwargs) & _SECRETS_MANAGER_ONLY:
        return "secrets_manager"
    prefixes = [v for k, v in given.items() if k in _PREFIXES and isinstance(v, str)]
    if any(p.startswith("/") for p in prefixes):
        return "ssm"
    if airflow_kwargs or own:
        raise UsageError(f"PipekeySecretsBackend: backend_kwargs "
                         f"{sorted([*airflow_kwargs, *own])} are those of the drop-in for "
                         "Airflow's AWS backends: add \"compat\": \"ssm\" or "
                         "\"secrets_manager\" to say which")
    return None


_lks: dict[str, Pipekey] = {}
_lks_lock = threading.Lock()


def _backend_config(kind: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    static = sorted(set(kwargs) & _STATIC_KEYS)
    if static:
        raise UsageError(f"PipekeySecretsBackend: backend_kwargs {static}: pipekey takes no "
                         "AWS keys in backend_kwargs (use the instance's role, or the "
                         "environment's AWS_* variables)")
    method = kwargs.get("assume_role_method")
    if method not in (None, "assume_role"):
        raise UsageError(f"PipekeySecretsBackend: assume_role_method {method!r}: pipekey "
                         "assumes role_arn with sts:AssumeRole only")
    config: dict[str, Any] = {_AWS[k]: v for k, v in kwargs.items() if k in _AWS and v is not None}
    assume = kwargs.get("assume_role_kwargs") or {}
    unknown = sorted(set(assume) - set(_ASSUME))
    if unknown:
        raise UsageError(f"PipekeySecretsBackend: assume_role_kwargs {unknown}: pipekey takes "
                         f"{sorted(_ASSUME)}")
    config.update({_ASSUME[k]: v for k, v in assume.items()})
    if kind == "ssm":
        config.update(type="aws_ssm", prefix="/")
    else:  # one secret per name, never a field of a parent document (Airflow's reading)
        config.update(type="aws_secrets_manager", prefix="", documents=False)
    if kwargs.get("cache") is not None:
        config["cache"] = kwargs["cache"]
    return config


def _pipekey(kind: str, kwargs: Mapping[str, Any]) -> Pipekey:
    """One Pipekey per distinct compat configuration per process (its cache is shared)."""
    raw: dict[str, Any] = {"backends": {f"airflow_{kind}": _backend_config(kind, kwargs)}}
    if kwargs.get("audit") is not None:
        raw["audit"] = kwargs["audit"]
    identity = json.dumps([raw, kwargs.get("env")], sort_keys=True, default=str)
    with _lks_lock:
        if identity not in _lks:
            where = Path.cwd() / f"<backend_kwargs compat={kind}>"
            from ..client import from_manifest  # the drop-in only: a brokered task builds none

            _lks[identity] = from_manifest(parse_manifest(raw, where, kwargs.get("env")))
        return _lks[identity]


class CompatReader:
    """Airflow's SSM or Secrets Manager backend's lookups, answered through pipekey."""

    def __init__(self, kind: str, given: Mapping[str, Any], airflow_kwargs: Mapping[str, Any],
                 mask: Callable[[str | None], None],
                 mask_connection: Callable[[str | None], None]) -> None:
        mode = given.get("mode", "direct")
        if mode not in ("direct", "observe"):
            raise UsageError(f"PipekeySecretsBackend: compat={kind!r} works in mode 'direct' "
                             "or 'observe' (broker mode reads the manifest's pipelines and "
                             "teams)")
        self.kind = kind
        self.sep = str(airflow_kwargs.get("sep", "/"))
        self.extra_words = airflow_kwargs.get("extra_conn_words") or {}
        try:
            words(self.extra_words)
        except ValueError as exc:
            raise UsageError(f"PipekeySecretsBackend: {exc}") from None
        self.prefixes: dict[str, str | None] = {}
        self.patterns: dict[str, str | None] = {}
        for what, default in KINDS[kind].items():
            prefix = given.get(f"{_ARG[what]}_prefix", default)
            strip = "/" if kind == "ssm" else self.sep
            self.prefixes[what] = prefix.rstrip(strip) if prefix else prefix
            self.patterns[what] = airflow_kwargs.get(f"{_ARG[what]}_lookup_pattern")
        self.lk = _pipekey(kind, {**given, **airflow_kwargs})
        self._mask, self._mask_connection = mask, mask_connection
        #: observe mode: records each lookup with what enforcement would decide
        self.observer: CompatObserver | None = None
        if mode == "observe":
            from ._airflow_observe import CompatObserver

            self.observer = CompatObserver(self.lk, given.get("manifest"), given.get("env"))

    def get(self, what: str, secret_id: str, team: str | None = None) -> str | None:
        """The value Airflow's backend would return for ``secret_id`` of kind ``what``
        (``connection``, ``variable``, ``config``) asked by a task of ``team``."""
        prefix = self.prefixes[what]
        if prefix is None:
            return None
        multi_team = airflow_conf().getboolean("core", "multi_team", fallback=False)
        names = airflow_names(prefix, secret_id, team if what != "config" else None,
                              multi_team=multi_team, sep="/" if self.kind == "ssm" else self.sep,
                              team_without_prefix=self.kind == "ssm")
        if not names:
            log.warning("pipekey: %s id %r contains %r, which separates the team from the id "
                        "in a team-scoped name; refused (None)", what, secret_id,
                        AIRFLOW_TEAM_SEP)
            return None
        pattern = self.patterns[what]
        if pattern and not re.match(pattern, secret_id, re.IGNORECASE):
            return None
        value = self._from_run(what, secret_id)
        if value is None:
            start = time.perf_counter()
            keys = [k for k in map(self._key, names) if k is not None]
            read, value = self._read(keys)
            if self.observer is not None and keys and what != "config":
                self.observer.record(what, secret_id, team, read or keys[-1], value,
                                     round((time.perf_counter() - start) * 1000, 3))
        if what == "connection":
            value = self._connection(secret_id, value)
            self._mask_connection(value)
        else:
            self._mask(value)
        return value

    def _key(self, name: str) -> str | None:
        """The pipekey key of an SSM / Secrets Manager name (None: a name pipekey cannot read,
        e.g. a character outside ``[A-Za-z0-9_.-/]``)."""
        key = name[1:] if self.kind == "ssm" and name.startswith("/") else name
        try:
            return validate_key(key)
        except InvalidKey:
            log.debug("pipekey: %r is not a name pipekey reads", name)
            return None

    def _read(self, keys: list[str]) -> tuple[str | None, str | None]:
        """The first of ``keys`` found and its value, all of them read in one batch; a
        failure of an earlier key is raised rather than answered by a later one. (None,
        None): none found."""
        if not keys:
            return None, None
        resolved = self.lk.chain.resolve(keys)
        for key in keys:
            found = resolved[key]
            if self.lk.audit.enabled and self.observer is None:  # observe: one event each
                self.lk.audit.record(AuditEvent(
                    "read", key, "ok" if found.found else "error" if found.errors else "absent",
                    backend=found.secret.backend if found.secret else None,
                    version=found.secret.version if found.secret else None))
            if found.found or found.errors:
                return key, found.require().value
        return None, None

    def _from_run(self, what: str, secret_id: str) -> str | None:
        """In an open pipekey run: what the run already holds under that name."""
        run = current()
        if run is None:
            return None
        if what == "connection" and secret_id in run.connection_keys:
            return run.get(run.connection_keys[secret_id])
        return run.held(secret_id) if what == "variable" else None

    def _connection(self, conn_id: str, value: str | None) -> str | None:
        """Secrets Manager's JSON connections in Airflow's form, as Airflow rewrites them."""
        if value is None or self.kind != "secrets_manager" or not value.strip().startswith("{"):
            return value
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise UsageError(f"connection {conn_id!r}: the secret starts with '{{' but is not "
                             f"valid JSON (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(data, dict):
            raise UsageError(f"connection {conn_id!r}: the secret is not a JSON object")
        return json.dumps(standardize(data, self.extra_words))



class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: a prefix argument PipekeySecretsBackend was not given
UNSET: Any = _Unset()
_NATIVE = {"connections_prefix": "airflow/connections", "variables_prefix": "airflow/variables",
           "config_prefix": None}


def compat_reader(compat: str | None, given: Mapping[str, Any],
                  airflow_kwargs: Mapping[str, Any], mask: Callable[[str | None], None],
                  mask_connection: Callable[[str | None], None]) -> CompatReader | None:
    """The reader of ``compat`` (or of the backend Airflow's kwargs are recognised as), None
    for pipekey's own kwargs. ``given``: PipekeySecretsBackend's arguments (``UNSET`` for a
    prefix not given, so Airflow's defaults apply)."""
    passed = {k: v for k, v in given.items() if v is not UNSET}
    kind = compat_kind(compat, passed, airflow_kwargs)
    if kind is None:
        return None
    return CompatReader(kind, passed, airflow_kwargs, mask, mask_connection)


def native_prefixes(*prefixes: Any) -> tuple[str | None, ...]:
    """The connections, variables and config prefixes of pipekey's own mode (defaults for
    those not given)."""
    return tuple(default if value is UNSET else value
                 for value, default in zip(prefixes, _NATIVE.values()))
