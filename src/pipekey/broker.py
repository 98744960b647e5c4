"""Broker mode's wire protocol: one run's values, asked for as one Airflow Variable.

In broker mode (``docs/airflow.md``, "Enforced isolation") the task process holds the
manifest but no store credential. To open a run it asks Airflow for ONE Variable whose key is
:func:`request_key` (pipeline, environment, scope parameters); the request travels task ->
supervisor -> Execution API -> the API server, whose ``PipekeySecretsBackend(mode="broker")``
recognises the reserved prefix, checks that the pipeline serves the task's team, opens the run
there and answers with :func:`encode_payload`: the run's resolved values as JSON. The task
decodes it with :func:`decode_payload` and opens a run over the held values
(:func:`brokered_run`): the same :class:`~pipekey.run.Run`, its chain one in-memory source.

The request key is ``pipekey.run.<pipeline>.<base64url(JSON)>``: the pipeline readable in
Airflow's logs, the rest in the URL-safe alphabet ``[A-Za-z0-9_-]``. The Task SDK puts a
Variable key into the Execution API's URL path unquoted (``variables/{key}``), so ``/``, ``?``,
``#``, ``%`` and spaces, all possible in a run name, must not appear in it.

A run request the broker refuses is answered, not raised: :func:`refusal_payload` holds the
broker's one-line reason (naming the team and the pipeline, never a value) and
:func:`decode_payload` raises :class:`~pipekey.errors.AccessDenied` with it, so the task
fails at once (an exception on the API server is an HTTP 500 the Task SDK retries for
seconds). A pipeline's logins minted per run (``dynamic:NAME``) travel in the payload with
a close ticket (:mod:`pipekey.broker_leases`); the worker's run close sends a *close
request* (:func:`close_request_key`) and the broker revokes the login.

Every value of a payload is registered with the masker (:mod:`pipekey.redact` and the
integrations' listeners) before :func:`encode_payload` or :func:`decode_payload` returns or
raises, so a printed payload shows none of them; pipekey never writes it to disk. This
module imports no Airflow.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from . import redact
from .announce import announce
from .backends.base import Backend, Secret
from .broker_leases import BrokeredMinter, Minted, close_body
from .chain import Chain
from .connection import Connection
from .errors import AccessDenied, CredentialError, PipekeyError, UsageError
from .keys import environment_problem, is_name, is_segment, is_under, segment_problem, validate_key
from .policy import check_parameters, pipeline_entry
from .run import Run

if TYPE_CHECKING:
    from .manifest import Manifest

__all__ = ["PREFIX", "BrokeredSource", "Payload", "Request", "brokered_run",
           "close_request_key", "decode_closed", "decode_payload", "encode_payload",
           "is_request", "parse_request", "refusal_payload", "request_key"]

#: the reserved prefix of a run request's Variable key
PREFIX = "pipekey.run."
VERSION = 1
_BODY = re.compile(r"[\w-]+", re.ASCII)  # base64url's alphabet
_MAX_KEY = 2000  # far below any URL limit on the way
_MAX_NAME = 500  # Airflow's dag, run and task ids are 250 characters each
_MAX_TICKET = 1200  # a close ticket (pipekey.broker_leases): base64url
_MAX_REFUSAL = 1000  # characters of a refusal's reason
log = logging.getLogger("pipekey")


@dataclass(frozen=True)
class Request:
    """A run request: what :func:`request_key` encodes."""

    pipeline: str
    env: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    run_name: str | None = None
    #: a close request: the ``definition``, ``env`` and ``ticket`` of a minted login
    close: Mapping[str, str] | None = None


def _check(pipeline: str, env: str | None, params: Mapping[str, Any],
           run_name: str | None) -> dict[str, str]:
    if not is_name(pipeline):
        raise UsageError(f"{pipeline!r} is not a pipeline name (letters, digits, '_', '-')")
    if env is not None and (problem := environment_problem(env)) is not None:
        raise UsageError(f"pipeline {pipeline!r}: the environment {problem}")
    clean = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise UsageError(f"pipeline {pipeline!r}: {name!r} is not a parameter name")
        if (problem := segment_problem(value)) is not None:  # never quote the value
            raise UsageError(f"pipeline {pipeline!r}: parameter {name!r} is not a valid key "
                             f"segment ({problem}; letters, digits, '_', '.', '-')")
        clean[name] = value
    if run_name is not None and (not isinstance(run_name, str) or len(run_name) > _MAX_NAME):
        raise UsageError(f"pipeline {pipeline!r}: a run name is text of at most {_MAX_NAME} "
                         "characters")
    return clean


def _check_close(pipeline: str, close: Any) -> dict[str, str]:
    if not isinstance(close, dict) or set(close) != {"definition", "env", "ticket"} \
            or not all(isinstance(v, str) for v in close.values()):
        raise UsageError(f"pipeline {pipeline!r}: a close request names a definition, an "
                         "environment and a ticket")
    if not is_name(close["definition"]) or not is_segment(close["env"]) \
            or len(close["ticket"]) > _MAX_TICKET or not _BODY.fullmatch(close["ticket"]):
        raise UsageError(f"pipeline {pipeline!r}: a close request's definition, environment "
                         "or ticket is malformed")
    return dict(close)


def request_key(pipeline: str, env: str | None = None, params: Mapping[str, Any] | None = None,
                run_name: str | None = None, close: Mapping[str, str] | None = None) -> str:
    """The Variable key that asks the broker for one run of ``pipeline``.

    Args:
        pipeline: the manifest's pipeline name.
        env: the environment; None lets the API server choose (its own default).
        params: the scope parameters (each a key segment).
        run_name: a label for the run in the API server's audit (the Airflow task's name).
        close: makes it a close request (:func:`close_request_key`).

    Raises:
        UsageError: a name or value that cannot be part of a key (quoted: none is secret).
    """
    clean = _check(pipeline, env, params or {}, run_name)
    fields: dict[str, Any] = {"v": VERSION, "env": env, "params": dict(sorted(clean.items())),
                              "run": run_name}
    if close is not None:
        fields["close"] = _check_close(pipeline, dict(close))
    body = json.dumps(fields, separators=(",", ":"), sort_keys=True)
    encoded = base64.urlsafe_b64encode(body.encode("utf-8")).decode("ascii").rstrip("=")
    key = f"{PREFIX}{pipeline}.{encoded}"
    if len(key) > _MAX_KEY:
        raise UsageError(f"pipeline {pipeline!r}: the run request is too long "
                         f"({len(key)} characters; parameters and run name too big)")
    return key


def is_request(key: str) -> bool:
    """True if ``key`` is in the reserved namespace of run requests."""
    return isinstance(key, str) and key.startswith(PREFIX)


def parse_request(key: str) -> Request:
    """The request a :func:`request_key` encodes.

    Raises:
        UsageError: ``key`` is in the reserved namespace but not a well-formed request.
    """
    shown = key if len(key) <= 120 else key[:117] + "..."
    bad = UsageError(f"{shown!r} is not a pipekey run request (a Variable key starting with "
                     f"{PREFIX!r} is reserved for pipekey's broker)")
    if not is_request(key) or len(key) > _MAX_KEY:
        raise bad
    pipeline, dot, encoded = key[len(PREFIX):].partition(".")
    if not dot or not _BODY.fullmatch(encoded):
        raise bad
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, binascii.Error, RecursionError):  # RecursionError: deep nesting
        raise bad from None
    if not isinstance(body, dict) or body.get("v") != VERSION \
            or not isinstance(body.get("params"), dict):
        raise bad
    try:
        params = _check(pipeline, body.get("env"), body["params"], body.get("run"))
        close = None if body.get("close") is None else _check_close(pipeline, body["close"])
    except UsageError as exc:
        raise UsageError(f"{shown!r} is not a valid pipekey run request: {exc}") from None
    return Request(pipeline, body.get("env"), params, body.get("run"), close)


def close_request_key(pipeline: str, minted: Minted) -> str:
    """The Variable key that asks the broker to revoke ``minted`` (a run's close)."""
    return request_key(pipeline, minted.env, None, None, close=close_body(minted))


# -- the answer ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Payload:
    """One run's resolved values as the broker sends them. Values never show in its repr.

    ``names``: secret name -> Secret; ``connections``: connection name -> Secret (its stored
    value); ``keys``: further absolute keys the run resolved (the ``key:`` targets of its
    ``dlt`` table). Each Secret keeps the key, backend, path and version it came from.
    """

    pipeline: str
    env: str
    params: Mapping[str, str]
    run_name: str
    names: Mapping[str, Secret] = field(repr=False)
    connections: Mapping[str, Secret] = field(repr=False)
    keys: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    #: connection name -> the login the broker minted for the run (``dynamic:NAME``)
    minted: Mapping[str, Minted] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (f"Payload({self.pipeline!r}, env={self.env!r}, run={self.run_name!r}, "
                f"names={sorted(self.names)}, connections={sorted(self.connections)}, "
                f"minted={sorted(self.minted)})")

    def secrets(self) -> list[Secret]:
        """Every Secret held, each once."""
        every = [*self.names.values(), *self.connections.values(), *self.keys.values()]
        return list({s.key: s for s in every}.values())


def _secret_json(secret: Secret) -> dict[str, Any]:
    return {"key": secret.key, "value": secret.value, "backend": secret.backend,
            "path": secret.path, "version": secret.version, "document": secret.document}


def encode_payload(run: Run, keys: Mapping[str, Secret] | None = None,
                   minted: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The answer to a run request: ``run``'s resolved values (it must be open) as JSON;
    ``minted``: its minted logins (:func:`pipekey.broker_leases.minted_entries`).

    Each value is registered with the masker before this returns (the run registered its
    own when it resolved them), and with it each value's JSON-escaped form, the form it has
    inside the payload.
    """
    resolved = run.resolved()
    names = {n: _secret_json(s) for n, s in resolved.items() if not n.startswith("connection:")}
    connections = {n.removeprefix("connection:"): _secret_json(s)
                   for n, s in resolved.items() if n.startswith("connection:")}
    text = json.dumps({"v": VERSION, "pipeline": run.pipeline, "env": run.environment,
                       "params": dict(run.params), "run": run.name, "names": names,
                       "connections": connections,
                       "keys": {k: _secret_json(s) for k, s in (keys or {}).items()},
                       "minted": {c: dict(m) for c, m in (minted or {}).items()}},
                      separators=(",", ":"), sort_keys=True)
    announce(*(str(m["value"]) for m in (minted or {}).values()))
    announce(*(s.value for s in (keys or {}).values()))  # the run announced its own
    return text


def _values(body: Any) -> Iterable[str]:
    """Every value in a decoded payload body, whatever its shape (for the masker)."""
    if not isinstance(body, dict):
        return
    for section in ("names", "connections", "keys", "minted"):
        entries = body.get(section)
        for entry in (entries.values() if isinstance(entries, dict) else ()):
            if isinstance(entry, dict) and isinstance(entry.get("value"), str):
                yield entry["value"]


def refusal_payload(reason: str) -> str:
    """The answer to a run request the broker refuses: ``reason`` (one line, no value)."""
    line = (reason.splitlines() or [""])[0]
    line = line if len(line) <= _MAX_REFUSAL else line[:_MAX_REFUSAL - 3] + "..."
    return json.dumps({"v": VERSION, "refused": line}, separators=(",", ":"))


def _refused(body: Any) -> None:
    if isinstance(body, dict) and body.get("v") == VERSION and "refused" in body:
        raise AccessDenied(str(body["refused"])[:_MAX_REFUSAL])


def decode_closed(text: str | None) -> str:
    """The login the broker revoked, from its answer to a close request.

    Raises:
        AccessDenied: the broker refused (its reason).
        UsageError: no answer, or not one of pipekey's.
    """
    bad = UsageError("the broker's answer to a close request is not pipekey's (is the API "
                     "server's PipekeySecretsBackend in mode='broker' and of this version?)")
    try:
        body = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        raise bad from None
    _refused(body)
    if not isinstance(body, dict) or not isinstance(body.get("closed"), str):
        raise bad
    return str(body["closed"])


def decode_payload(text: str) -> Payload:
    """The payload :func:`encode_payload` made. Every value in it is registered with the
    masker (and so its JSON-escaped form) before this returns or raises.

    Raises:
        AccessDenied: the broker refused the run (its reason, naming team and pipeline).
        UsageError: ``text`` is not a payload (the message never quotes it).
    """
    if not isinstance(text, str):
        raise UsageError("the broker's answer is not text")
    bad = UsageError("the broker's answer is not a pipekey run payload (is the API server's "
                     "PipekeySecretsBackend in mode='broker' and of the same pipekey version?)")
    try:
        body = json.loads(text)
    except ValueError:
        announce(text)  # cut short or garbled: whatever values it holds, masked whole
        raise bad from None
    announce(*_values(body))
    _refused(body)
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise bad
    try:
        return Payload(str(body["pipeline"]), str(body["env"]),
                       {str(k): str(v) for k, v in dict(body["params"]).items()},
                       str(body["run"]), _secrets(body["names"]), _secrets(body["connections"]),
                       _secrets(body.get("keys") or {}), _minted(body.get("minted") or {}))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise bad from None


def _minted(section: Any) -> dict[str, Minted]:
    out = {}
    for name, entry in dict(section).items():
        ticket = str(entry["ticket"])
        if len(ticket) > _MAX_TICKET or not _BODY.fullmatch(ticket):
            raise ValueError("malformed ticket")
        out[str(name)] = Minted(Connection.from_json(str(entry["value"]), conn_id=str(name)),
                                str(entry["definition"]), str(entry["login"]),
                                float(entry["expires_at"]), str(entry["env"]), ticket)
    return out


def _secrets(section: Any) -> dict[str, Secret]:
    out = {}
    for name, entry in dict(section).items():
        out[str(name)] = Secret(key=validate_key(str(entry["key"])), value=str(entry["value"]),
                                backend=str(entry["backend"]), path=str(entry["path"]),
                                version=None if entry.get("version") is None
                                else str(entry["version"]),
                                document=bool(entry.get("document")))
    return out


# -- the worker side ----------------------------------------------------------------------
class BrokeredSource(Backend):
    """The chain of a brokered run: the values the broker delivered, in memory, read-only.

    A key the payload does not hold is absent here: a brokered run reads what its pipeline
    declares (requires, optional, shared, connections, dlt ``key:`` targets).
    ``invalidate`` (what ``run.refresh`` calls) asks the broker again for the whole run.
    """

    kind = "broker"

    def __init__(self, payload: Payload, refetch: Callable[[], Payload] | None = None) -> None:
        super().__init__("broker")
        self._refetch = refetch
        self._held: dict[str, Secret] = {}
        self._load(payload)

    def _load(self, payload: Payload) -> None:
        self.payload = payload
        self._held = {s.key: s for s in payload.secrets()}

    def describe(self) -> str:
        return f"values the pipekey broker delivered for run {self.payload.run_name!r}"

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        return {k: self._held[k] for k in keys if k in self._held}

    def _list(self, prefix: str) -> Iterable[str]:
        return [k for k in self._held if not prefix or is_under(k, prefix.rstrip("/"))]

    def invalidate(self, keys: Iterable[str]) -> None:
        """Ask the broker again (``run.refresh``); without a way to ask, keep what is held."""
        if self._refetch is not None:
            self._load(self._refetch())

    def close(self) -> None:
        """Drop every value (the run has ended): the held ones and the payload's, of which
        only the run's names and parameters stay (``describe``). ``invalidate`` would ask
        again."""
        self._held = {}
        self.payload = replace(self.payload, names={}, connections={}, keys={}, minted={})


def brokered_run(manifest: Manifest, pipeline: str, fetch: Callable[[str], str | None], *,
                 env: str | None = None, params: Mapping[str, Any] | None = None,
                 run_name: str | None = None) -> Run:
    """A run of ``pipeline`` over the values the broker sends: no backend is built.

    Args:
        manifest: the manifest (names and templates only, no values).
        fetch: asks for one Variable by key and returns its value (None: no answer); in an
            Airflow task, ``airflow.sdk.Variable.get`` through the Execution API.
        env, params, run_name: as for ``Pipekey.pipeline``.

    Returns the run, not yet opened (``with brokered_run(...) as run``). Its logins minted
    per run come from the broker; closing the run asks the broker to revoke them.

    Raises:
        AccessDenied: the broker refused the run (its reason names team and pipeline).
        UsageError: no such pipeline, or the broker gave no answer (not configured: the API
            server's log says more).
    """
    config = pipeline_entry(manifest.pipelines, pipeline, manifest.path)
    check_parameters(pipeline, config.parameters(), params or {})
    label = run_name[:_MAX_NAME] if run_name else None  # a label for the server's audit
    key = request_key(pipeline, env, {k: str(v) for k, v in (params or {}).items()}, label)

    def ask() -> Payload:
        answer = fetch(key)
        if answer is None:
            raise UsageError(f"the pipekey broker gave no run of pipeline {pipeline!r} "
                             f"(Variable {key[:60]!r}...): not configured? see the API "
                             "server's log")
        try:
            payload = decode_payload(answer)
        except AccessDenied as exc:
            raise AccessDenied(f"the pipekey broker refused the run of pipeline "
                               f"{pipeline!r}: {exc}") from None
        if payload.pipeline != pipeline:
            raise UsageError(f"the pipekey broker answered for pipeline {payload.pipeline!r}, "
                             f"not {pipeline!r}")
        return payload

    def send_close(minted: Minted) -> None:
        answer = fetch(close_request_key(pipeline, minted))
        if answer is None:
            raise CredentialError(minted.definition, f"the pipekey broker did not answer the "
                                                     f"close request of login {minted.login!r}"
                                                     "; it expires by its ttl")
        decode_closed(answer)

    def refetch() -> Payload:  # run.refresh: the broker mints again; hand those back at once
        again = ask()
        for minted in again.minted.values():
            try:
                send_close(minted)
            except PipekeyError as exc:
                log.warning("pipekey: %s", exc)
        return replace(again, minted={})

    payload = ask()
    source = BrokeredSource(payload, refetch)
    redact.install()
    by_definition: dict[str, list[Minted]] = {}
    for conn, definition in config.minted_connections().items():
        if conn not in payload.minted:
            raise UsageError(f"the pipekey broker sent no login for connection {conn!r} of "
                             f"pipeline {pipeline!r} (an API server of another version?)")
        by_definition.setdefault(definition, []).append(payload.minted[conn])
    minters = {d: BrokeredMinter(d, logins, send_close) for d, logins in by_definition.items()}
    return Run(pipeline, config, Chain([source]), payload.env, payload.params,
               run_name or payload.run_name, minters=minters, owns_chain=True)
