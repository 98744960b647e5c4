"""``pipekey.Connection``: an Airflow-compatible connection whose password stays hidden.

Both Airflow formats are read and written the way Apache Airflow does it:

* the URI, ``postgres://user:p%40ss@db.example.com:5432/analytics?sslmode=require``:
  percent-encoded parts, ``__extra__`` for extras that are not flat strings, a host that
  carries its own protocol (``http://https://api.example.com``), IPv6 hosts, empty parts,
  ``postgresql`` read as ``postgres`` and ``-`` in the type read as ``_``;
* the JSON form, ``{"conn_type": "postgres", "host": ..., "extra": {...}}``.

``AIRFLOW_CONN_<ID>`` variables hold either. Deliberate differences from Airflow are listed in
``docs/connections.md``; the main one: a parse error names the field and the character
position, never the URI (Airflow's message quotes it, password included).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit

from . import converters
from .childenv import connection_env_name
from .connection_words import canonical_field
from .errors import UsageError
from .redact import MASK, sensitive_values

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["Connection", "InvalidConnection"]

EXTRA_KEY = "__extra__"
#: The JSON form's keys, in the order Airflow's ``Connection.as_json`` writes them.
JSON_ORDER = ("conn_type", "description", "host", "login", "password", "schema", "port")
_FIELDS = ("conn_type", "host", "port", "login", "password", "schema", "extra", "description",
           "conn_id")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")  # RFC 3986, section 3.1
_PROTOCOL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#]*@")


class InvalidConnection(UsageError, ValueError):
    """A connection value does not parse. Names the connection and the field, never a value."""


@dataclass(frozen=True)
class Connection:
    """A connection: Airflow's fields, ``extra`` as a dict. ``repr`` hides the password."""

    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    conn_id: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.port is not None and (type(self.port) is not int or not 0 <= self.port <= 65535):
            raise InvalidConnection(f"{_what(self.conn_id)}: port must be a whole number from 0 "
                                    f"to 65535 (got {_port_shown(self.port)})")

    def __repr__(self) -> str:
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name not in ("host", "password", "extra")
                 and getattr(self, f.name) is not None]
        if self.host is not None:
            shown.insert(1 if self.conn_type is not None else 0,
                         f"host={mask_host_userinfo(self.host)!r}")
        if self.password is not None:
            shown.append(f"password={MASK!r}")
        if self.extra:
            shown.append(f"extra=<{len(self.extra)} keys: {', '.join(sorted(self.extra))}>")
        return f"Connection({', '.join(shown)})"

    __str__ = __repr__

    def secret_values(self) -> list[str]:
        """What must never be logged: the password and the ``extra`` fields Airflow's masker
        treats as sensitive, or that look like a credential, at any depth
        (:func:`pipekey.redact.sensitive_values`)."""
        return [v for v in [self.password, *sensitive_values(self.extra)] if v]

    def replace(self, **changes: Any) -> "Connection":
        """A copy with some fields changed."""
        return replace(self, **changes)

    # -- parsing --------------------------------------------------------------------------
    @classmethod
    def from_value(cls, value: str, conn_id: str | None = None) -> "Connection":
        """Parse a stored value: JSON if it starts with ``{``, else an Airflow URI."""
        return cls.from_json(value, conn_id) if value.lstrip().startswith("{") \
            else cls.from_uri(value, conn_id)

    @classmethod
    def from_uri(cls, uri: str, conn_id: str | None = None) -> "Connection":
        """Parse an Airflow connection URI.

        Raises:
            InvalidConnection: naming the part and its position; the URI is never quoted.
        """
        return _parse_uri(uri, conn_id)

    @classmethod
    def from_json(cls, value: str | Mapping[str, Any], conn_id: str | None = None) -> "Connection":
        """Parse Airflow's JSON form (a string or an already-parsed mapping)."""
        what = _what(conn_id)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidConnection(f"{what}: not valid JSON (line {exc.lineno}, column "
                                        f"{exc.colno})") from None
        if not isinstance(value, Mapping):
            raise InvalidConnection(f"{what}: JSON form must be an object")
        data: dict[str, Any] = {}
        for position, name in enumerate(value, start=1):
            canonical = canonical_field(name)  # Airflow's alias words: user, pass, engine...
            if canonical not in _FIELDS:  # not quoted: a misplaced value may sit in a name
                raise InvalidConnection(f"{what}: JSON form has an unknown field (field "
                                        f"{position} of the object); the fields are "
                                        f"{', '.join(_FIELDS)} or Airflow's alias words")
            data.setdefault(canonical, value[name])  # the first word of a field wins, as Airflow's
        extra = _extra_dict(data.pop("extra", None), what)
        port = data.pop("port", None)
        conn_type = data.pop("conn_type", None)
        data.pop("conn_id", None)
        return cls(conn_type=_normalize_type(conn_type) if conn_type else None,
                   port=_port_value(port, what), extra=extra, conn_id=conn_id, **data)

    @classmethod
    def from_env(cls, conn_id: str,
                 environ: Mapping[str, str] | None = None) -> "Connection | None":
        """The connection in ``AIRFLOW_CONN_<CONN_ID>``, or None if the variable is unset.
        The variable's name is :meth:`to_airflow_env`'s (``my-db``: ``AIRFLOW_CONN_MY_DB``)."""
        value = (os.environ if environ is None else environ).get(connection_env_name(conn_id))
        return None if value is None else cls.from_value(value, conn_id)

    # -- rendering ------------------------------------------------------------------------
    def to_uri(self) -> str:
        """Render as an Airflow URI, exactly as Airflow's ``get_uri`` does."""
        return _render_uri(self)

    def to_dict(self) -> dict[str, Any]:
        """Airflow's JSON form as a dict, keys in Airflow's order (``conn_type``,
        ``description``, ``host``, ``login``, ``password``, ``schema``, ``port``, ``extra``):
        None fields left out, empty strings kept (as Airflow's ``as_json``), extra only if
        it has keys."""
        data = {k: getattr(self, k) for k in JSON_ORDER if getattr(self, k) is not None}
        if self.extra:
            data["extra"] = dict(self.extra)
        return data

    def to_json(self) -> str:
        """Airflow's JSON form."""
        return json.dumps(self.to_dict())

    def to_airflow_env(self, conn_id: str | None = None) -> dict[str, str]:
        """``{"AIRFLOW_CONN_<ID>": uri}`` for a child process that runs Airflow hooks."""
        conn_id = conn_id or self.conn_id
        if not conn_id:
            raise UsageError("to_airflow_env needs a conn_id")
        return {connection_env_name(conn_id): self.to_uri()}

    # -- converters (pipekey.converters, which knows Connection only as a type) ----------
    def to_sqlalchemy_url(self) -> URL:
        """A ``sqlalchemy.engine.URL`` (its repr masks the password)."""
        return converters.to_sqlalchemy_url(self)

    def to_boto3_session_kwargs(self) -> dict[str, str]:
        """Arguments for ``boto3.Session(**kwargs)``."""
        return converters.to_boto3_session_kwargs(self)

    def to_dlt_credentials(self) -> dict[str, Any]:
        """dlt credential fields for this connection's destination type."""
        return converters.to_dlt_credentials(self)

    def to_env_vars(self) -> dict[str, str]:
        """The variables the type's own tools read (PGHOST..., AWS_ACCESS_KEY_ID...)."""
        return converters.to_env_vars(self)


def _what(conn_id: str | None) -> str:
    return f"connection {conn_id!r}" if conn_id else "connection"


def _normalize_type(conn_type: str) -> str:
    if conn_type == "postgresql":
        return "postgres"
    return conn_type.replace("-", "_")


def _port_value(port: Any, what: str) -> int | None:
    """A JSON-form port: a whole number 0-65535, as a number or digits in a string."""
    if port is None or port == "":
        return None
    if type(port) is int:
        value = port
    elif type(port) is float and port.is_integer():  # 5432.0 from a JSON writer
        value = int(port)
    elif isinstance(port, str) and port.strip().isascii() and port.strip().isdigit():
        value = int(port)
    else:
        raise InvalidConnection(f"{what}: port is not an integer (got {_port_shown(port)})")
    if not 0 <= value <= 65535:
        raise InvalidConnection(f"{what}: port must be a whole number from 0 to 65535 "
                                f"(got {value})")
    return value


def _port_shown(port: Any) -> str:
    """A port for an error message: numbers as they are, anything else by its type."""
    return repr(port) if type(port) in (int, float) else f"a {type(port).__name__}"


def _extra_dict(extra: Any, what: str) -> dict[str, Any]:
    if extra in (None, ""):
        return {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            raise InvalidConnection(f"{what}: extra is not valid JSON") from None
    if not isinstance(extra, dict):
        raise InvalidConnection(f"{what}: extra must be a JSON object")
    return extra


def _netloc_host(parts: SplitResult) -> str:
    # As Airflow's _parse_netloc_to_hostname: keep a path-like host whole.
    try:
        hostname = unquote(parts.hostname or "")
    except ValueError:
        hostname = ""
    if "/" in hostname:
        hostname = parts.netloc
        if "@" in hostname:
            hostname = hostname.rsplit("@", 1)[1]
        if ":" in hostname:
            hostname = hostname.split(":", 1)[0]
        hostname = unquote(hostname)
    return hostname


def _parse_uri(uri: str, conn_id: str | None) -> Connection:
    what = f"{_what(conn_id)} URI"
    if not isinstance(uri, str):
        raise InvalidConnection(f"{what}: not a string")
    schemes = uri.count("://")
    if schemes > 2:
        third = [m.start() for m in re.finditer("://", uri)][2]
        raise InvalidConnection(f"{what}: more than two '://' (the third at character {third})")
    _check_scheme(uri, what)
    with_protocol = schemes == 2
    scheme = _split(uri, what).scheme
    rest = uri.replace(f"{scheme}://", "" if with_protocol else "//")
    if with_protocol:
        head = rest.split("://", 1)[0]
        if "@" in head or ":" in head:
            start = len(scheme) + 3
            raise InvalidConnection(f"{what}: a host protocol may not hold '@' or ':' "
                                    f"(characters {start}-{start + len(head)})")
    parts = _split(rest, what)
    _check_userinfo_ends(uri, parts, what)
    host = _netloc_host(parts)
    if host and with_protocol:
        host = f"{parts.scheme}://{host}"
    try:
        port = parts.port
    except ValueError:
        at = max(uri.find(parts.netloc), 0) + parts.netloc.rfind(":") + 1
        raise InvalidConnection(f"{what}: the port at character {at} is not an integer "
                                "from 0 to 65535") from None
    schema = parts.path[1:]
    extra: dict[str, Any] = {}
    if parts.query:
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if EXTRA_KEY in query:
            extra = _extra_dict(query[EXTRA_KEY], _what(conn_id))
        else:
            extra = {k: _maybe_json(v) for k, v in query.items()}
    return Connection(
        conn_type=_normalize_type(scheme), host=host,
        port=port, login=unquote(parts.username) if parts.username else parts.username,
        password=unquote(parts.password) if parts.password else parts.password,
        schema=unquote(schema) if schema else schema, extra=extra, conn_id=conn_id)


def _check_userinfo_ends(uri: str, parts: SplitResult, what: str) -> None:
    """Refuse a raw ``@`` after the host: it means a password holding an unencoded ``/``,
    ``?`` or ``#``, whose tail would otherwise be parsed into ``schema`` or ``extra`` (and
    shown by ``repr``). Airflow writes those characters percent-encoded."""
    for part in (parts.path, parts.query, parts.fragment):
        if "@" in part:
            at = uri.rfind("@")
            raise InvalidConnection(
                f"{what}: an '@' after the host (character {at}): a password or login holding "
                "'/', '?' or '#' must be percent-encoded (urllib.parse.quote(password, safe=''))")


def _check_scheme(uri: str, what: str) -> None:
    """Refuse a URI whose type is not a URI scheme: ``urlsplit`` would find no scheme and put
    the whole text, password included, in the path (and so in ``schema``)."""
    head, sep, _ = uri.partition("://")
    if not sep:
        if not uri.startswith("//"):
            raise InvalidConnection(f"{what}: does not start with '<type>://'")
    elif head and not _SCHEME.fullmatch(head):
        raise InvalidConnection(f"{what}: the type (characters 0-{len(head)}) is not a URI "
                                "scheme: a letter, then letters, digits, '+', '-' or '.'")


def mask_host_userinfo(host: str) -> str:
    """``host`` with any ``user:password@`` in it replaced by ``***@``."""
    if "@" not in host:
        return host
    protocol = _PROTOCOL.match(host)
    start = protocol.end() if protocol else 0
    return f"{host[:start]}{MASK}@{host.rsplit('@', 1)[1]}"


def host_userinfo(host: str | None) -> list[str]:
    """The ``user:password`` of a host that carries one, and the password alone."""
    if not host or "@" not in host:
        return []
    protocol = _PROTOCOL.match(host)
    userinfo = host[protocol.end() if protocol else 0:].rsplit("@", 1)[0]
    return [userinfo, userinfo.partition(":")[2]]


def scrub_urls(text: str) -> str:
    """``text`` with the userinfo of every URL in it (``scheme://user:pw@``) as ``***@``."""
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)


def _split(uri: str, what: str) -> SplitResult:
    try:
        return urlsplit(uri)
    except ValueError:
        raise InvalidConnection(f"{what}: not a URI (an unbalanced '[' or ']' in the host?)") \
            from None


def _maybe_json(value: str) -> Any:
    if not value:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _render_uri(conn: Connection) -> str:
    uri = f"{conn.conn_type.lower().replace('_', '-')}://" if conn.conn_type else "//"
    host, protocol = conn.host, None
    if conn.host and "://" in conn.host:
        protocol, bare = conn.host.split("://", 1)
        if protocol == conn.conn_type:
            protocol = None
        else:
            host = bare
    if protocol:
        uri += f"{protocol}://"
    authority = ""
    if conn.login is not None:
        authority += quote(conn.login, safe="")
    if conn.password is not None:
        authority += ":" + quote(conn.password, safe="")
    if authority:
        uri += authority + "@"
    block = quote(host, safe="") if host else ""
    if conn.port is not None:  # Airflow's get_uri drops port 0; pipekey keeps it
        block += f"@:{conn.port}" if not block and not authority else f":{conn.port}"
    if conn.schema:
        block += f"/{quote(conn.schema, safe='')}"
    uri += block
    if conn.extra:
        uri += ("?" if conn.schema else "/?") + _render_query(conn.extra)
    return uri


def _render_query(extra: dict[str, Any]) -> str:
    flat = all(isinstance(v, str) for v in extra.values())
    try:
        query = urlencode(extra)
    except TypeError:
        query = ""
    if flat and query and extra == dict(parse_qsl(query, keep_blank_values=True)):
        return query
    return urlencode({EXTRA_KEY: json.dumps(extra)})
