"""Keep resolved values out of logs: a masker for stdlib logging and structlog.

Every value the chain resolves in this process is registered (:func:`register`), and every
value pipekey writes, before it is written. The masker replaces it, and its URL-encoded,
base64 (inside a longer base64 text too: :func:`base64_middles`) and JSON-escaped forms, with
``***``; and the secrets inside it (:func:`secret_parts`): each line of a multi-line value (a
PEM key printed line by line), a URL's password, the sensitive fields of a JSON document or
a connection's ``extra`` (:func:`sensitive_values`). It also masks token shapes whether
registered or not: AWS access key ids, PEM blocks and JWTs.
:func:`install` puts it in a log-record factory (every logger, however late its handlers are
added), as a ``logging.Filter`` on the root logger, its handlers and any others named (which
also scrubs traceback text, chained causes included), and, when structlog is configured, as
a processor ahead of its renderer.

This is what guards Airflow task logs under ``dag.test()`` and ``airflow tasks test``, where
Airflow switches its own masking off.

The cloud SDKs log request and response bodies at DEBUG (botocore's ``Response body``, the
GCP client's ``httpRequest``/``httpResponse`` fields, Azure's network trace): a value read
is in the response body before pipekey has it to register. :func:`guard_sdk_logs`
attaches :class:`SdkBodyFilter` to those loggers, which withholds every body and the
credential headers before any handler sees the record; every remote backend calls it when
it is built, and :func:`install` does too.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import sys
import threading
from collections import Counter
from typing import Any, Iterable, Mapping, MutableMapping
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

__all__ = ["MASK", "Redactor", "SdkBodyFilter", "base64_middles", "guard_sdk_logs", "install",
           "looks_like_credential", "redactor", "register", "secret_parts", "sensitive_values"]

MASK = "***"
MIN_LENGTH = 4  # shorter values would mask ordinary words
PART_MIN_LENGTH = 6  # a line or field of a value is masked on its own from this length
MAX_PARTS = 1000  # parts registered for one value (a JSON document could hold many)
MAX_DEPTH = 16  # nesting followed into a JSON document
TOKEN_SHAPES = re.compile(
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"                                  # AWS access key ids
    r"|-----BEGIN [A-Z0-9 ]+-----[\s\S]*?-----END [A-Z0-9 ]+-----"    # PEM blocks
    r"|\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")  # JWTs


def encodings(value: str) -> set[str]:
    """The forms a value takes in logs: as is, URL-encoded, base64 (also inside a longer
    base64 text, :func:`base64_middles`), JSON-escaped, and as Python's ``repr``/``ascii``
    show it inside quotes (``%r`` of the value, or of a dict or ``os.environ`` holding it,
    escapes quotes and unprintable characters). Forms shorter than ``MIN_LENGTH`` are left
    out, as short values are."""
    raw = value.encode("utf-8")
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
             base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
             repr(value)[1:-1], ascii(value)[1:-1], repr(raw)[2:-1], *base64_middles(raw)}
    forms |= {f.rstrip("=") for f in forms if f.endswith("=")}
    return {f for f in forms if len(f) >= MIN_LENGTH}


def base64_middles(raw: bytes) -> set[str]:
    """What base64 of a text holding ``raw`` always contains, wherever ``raw`` starts in it
    (``Basic b64("bob:" + password)``): for each offset 0, 1, 2 modulo 3, the characters
    whose 6 bits all come from ``raw``, in the standard and URL-safe alphabets.

    Base64 turns 3 bytes into 4 characters, so the characters that mix ``raw``'s first or
    last bits with its neighbours' depend on those neighbours: they are dropped, which
    leaves about ``4 * len(raw) / 3 - 2`` characters. Like every form, a middle shorter than
    ``MIN_LENGTH`` is not registered (a value that short is not registered at all)."""
    middles = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode()
        start, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
        middle = encoded[start:end]
        middles |= {middle, middle.translate(_URLSAFE)}
    return middles


_URLSAFE = str.maketrans("+/", "-_")


#: Airflow's ``DEFAULT_SENSITIVE_FIELDS``: a field whose name contains one is masked.
SENSITIVE_FIELDS = frozenset({
    "access_key", "access_token", "api_key", "apikey", "auth_header", "authorization",
    "bearer", "connection_string", "dsn", "passphrase", "passwd", "password", "private_key",
    "proxy", "proxy_password", "proxies", "secret", "service_account", "service_key", "token",
    "keyfile_dict", "webhook_url",
})
_ARMOR = re.compile(r"-----(?:BEGIN|END) [A-Z0-9 ]+-----")
_TOKEN_PREFIX = re.compile(r"(?:gh[pousr]_|github_pat_|glpat-|xox[abposr]-|[sr]k_(?:live|test)_"
                           r"|AIza|ya29\.)[A-Za-z0-9_.~+/=-]{8,}")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_~+/=-]{20,}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")


def is_sensitive_name(name: str) -> bool:
    """True if a field of this name holds a secret, as Airflow's masker decides: its name,
    lowercased with non-word runs as ``_``, contains one of ``SENSITIVE_FIELDS``."""
    normalized = re.sub(r"\W+", "_", name.strip().lower())
    return any(field in normalized for field in SENSITIVE_FIELDS)


def looks_like_credential(text: str) -> bool:
    """True for a string shaped like a credential whatever its field is called: a PEM block,
    a JWT, an AWS key id, a known token prefix (``ghp_``, ``xoxb-``, ``sk_live_``...), 32+
    hex digits, or 20+ token characters mixing cases and digits with high entropy."""
    text = text.strip()
    if len(text) < 16:
        return False
    if TOKEN_SHAPES.search(text) or _TOKEN_PREFIX.fullmatch(text) or _HEX.fullmatch(text):
        return True
    if not _TOKEN_CHARS.fullmatch(text):
        return False
    if not (re.search(r"[a-z]", text) and re.search(r"[A-Z]", text) and re.search(r"\d", text)):
        return False
    counts = Counter(text)
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    return entropy >= 3.5


def sensitive_values(data: Any, sensitive: bool = False, _depth: int = 0) -> list[str]:
    """The strings to mask in a connection's ``extra`` or any JSON document: every string
    under a sensitive field name (:func:`is_sensitive_name`, at any depth, dicts and lists
    under it included) and every string that :func:`looks_like_credential`; a string that
    holds a JSON document is searched too."""
    if _depth > MAX_DEPTH:
        return []
    if isinstance(data, Mapping):
        return [v for key, item in data.items()
                for v in sensitive_values(item, sensitive or is_sensitive_name(str(key)),
                                          _depth + 1)]
    if isinstance(data, (list, tuple)):
        return [v for item in data for v in sensitive_values(item, sensitive, _depth + 1)]
    if not isinstance(data, str):
        return []
    found = [data] if sensitive or looks_like_credential(data) else []
    nested = _json_document(data)
    if nested is not None:
        found += sensitive_values(nested, sensitive, _depth + 1)
    return found


def secret_parts(value: str) -> list[str]:
    """``value`` and the secrets inside it, each to be masked on its own: every line of a
    multi-line value (PEM armor lines aside), a URL's password and sensitive query
    parameters (an Airflow URI's ``__extra__`` too), the :func:`sensitive_values` of a JSON
    document; and the parts of those parts. Parts shorter than ``PART_MIN_LENGTH`` are left
    out (the value itself is always first)."""
    parts, seen, i = [value], {value}, 0
    while i < len(parts) and len(parts) < MAX_PARTS:
        text, i = parts[i], i + 1
        nested = _json_document(text)
        for part in [*_lines(text), *_url_secrets(text),
                     *(sensitive_values(nested) if nested is not None else [])]:
            if len(part) >= PART_MIN_LENGTH and part not in seen:
                seen.add(part)
                parts.append(part)
    return parts[:MAX_PARTS]


def _lines(text: str) -> list[str]:
    if "\n" not in text and "\r" not in text:
        return []
    return [line.strip() for line in text.splitlines()
            if line.strip() and not _ARMOR.fullmatch(line.strip())]


def _url_secrets(text: str) -> list[str]:
    text = text.strip()
    if "://" not in text or any(c.isspace() for c in text):
        return []
    try:
        url = urlsplit(text)
        password = url.password
    except ValueError:
        return []
    found = [password, unquote(password)] if password else []
    for name, item in parse_qsl(url.query):
        if name == "__extra__":
            found += sensitive_values(_json_document(item))
        elif is_sensitive_name(name) or looks_like_credential(item):
            found.append(item)
    return found


def _json_document(text: str) -> Any:
    """The JSON object or array ``text`` holds, else None."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return None


class Redactor(logging.Filter):
    """Replaces registered values in log records and structlog events."""

    def __init__(self) -> None:
        super().__init__("pipekey")
        self._lock = threading.Lock()
        self._needles: tuple[str, ...] = ()
        self._known: set[str] = set()

    def register(self, value: str | None) -> None:
        """Mask ``value``, the secrets inside it (:func:`secret_parts`), and all their encoded
        forms from now on."""
        if not value or len(value) < MIN_LENGTH or value in self._known:
            return
        forms = {form for part in secret_parts(value) for form in encodings(part)}
        with self._lock:
            self._known.add(value)
            # longest first, so a value containing another is masked whole
            self._needles = tuple(sorted(set(self._needles) | forms, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, MASK)
        return TOKEN_SHAPES.sub(MASK, text)

    def redact_bytes(self, data: bytes) -> bytes:
        """The same for raw output (a child process's stdout)."""
        for needle in self._needles:
            raw = needle.encode("utf-8")
            if raw in data:
                data = data.replace(raw, MASK.encode())
        return TOKEN_SHAPES.sub(MASK, data.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        masked = self.redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # formatters build this text after filters run, and reuse it when already set
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            scrubbed = self.redact(record.exc_text)
            if scrubbed != record.exc_text and record.exc_info:
                # Some formatters (structlog's) render exc_info themselves and never read
                # exc_text: fold the scrubbed traceback into the message instead.
                record.msg, record.args = f"{record.getMessage()}\n{scrubbed}", None
                record.exc_info, record.exc_text = None, None
            else:
                record.exc_text = scrubbed
        return True

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """A structlog processor."""
        for name, value in list(event.items()):
            if isinstance(value, str):
                event[name] = self.redact(value)
        return event


_redactor = Redactor()


def redactor() -> Redactor:
    """The process-wide redactor."""
    return _redactor


def register(value: str | None) -> None:
    """Mask ``value`` in every log this process writes through installed handlers."""
    _redactor.register(value)


WITHHELD = "<withheld by pipekey>"
#: The loggers on which the SDKs of pipekey's backends log request or response bodies (or
#: credential headers) at DEBUG. A logger's filters see only the records made on that exact
#: logger, so each is named; urllib3 and hvac log no bodies (request lines only).
SDK_BODY_LOGGERS = (
    "botocore.endpoint",      # "Making request for <op> with params: {... 'body': ...}"
    "botocore.parsers",       # "Response body: ..." (every response, STS credentials too)
    "google.auth.transport.requests",   # extra httpRequest / httpResponse
    "google.auth.transport.urllib3",
    "google.auth.transport._http_client",
    "google.cloud.secretmanager_v1.services.secret_manager_service.transports.rest",
    "google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc",
    "azure.core.pipeline.policies._universal",         # NetworkTraceLoggingPolicy
    "azure.core.pipeline.policies.http_logging_policy",
)
_BODY_FIELDS = frozenset({"body", "payload", "data"})
_BODY_MARKERS = ("\nRequest body:", "\nResponse content:")


class SdkBodyFilter(logging.Filter):
    """Withholds request and response bodies, and credential headers, from the records the
    cloud SDKs log at DEBUG, before any handler sees them; a record it cannot make safe is
    dropped. Registered values are masked as everywhere (:class:`Redactor`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._scrub(record)
        except Exception:  # an SDK changed its record shape: drop it rather than leak
            return False
        return _redactor.filter(record)

    def _scrub(self, record: logging.LogRecord) -> None:
        for name in ("httpRequest", "httpResponse", "request", "response"):
            extra = record.__dict__.get(name)
            if isinstance(extra, dict):
                record.__dict__[name] = _without_bodies(extra)
        msg, args = record.msg, record.args
        if not isinstance(msg, str):
            return
        if msg.startswith("Making request for") and isinstance(args, tuple) and len(args) == 2:
            record.args = (args[0], _without_bodies(args[1]) if isinstance(args[1], dict)
                           else WITHHELD)
        elif msg.startswith("Making request for"):
            # already formatted (the masker rewrites a record whose text it changed, args and
            # all): nothing left to parse, so keep the operation and withhold the params
            head, sep, _ = msg.partition(" with params:")
            record.msg, record.args = head + sep + (" " + WITHHELD if sep else ""), None
        elif msg.startswith("Response body") and args:
            record.args = (WITHHELD,)
        elif msg.startswith("Response body"):
            record.msg, record.args = "Response body:\n" + WITHHELD, None
        elif msg.startswith("Sending http request") and isinstance(args, tuple) and args:
            request = args[0]
            headers = _without_bodies({"headers": dict(getattr(request, "headers", {}))})
            shown = (f"<{type(request).__name__} method={getattr(request, 'method', '')}, "
                     f"url={getattr(request, 'url', '')}, headers={headers['headers']}>")
            record.args = (shown,)
        else:
            for marker in _BODY_MARKERS:  # Azure's network trace: the body comes last
                if marker in msg:
                    record.msg = msg[:msg.index(marker) + len(marker)] + "\n" + WITHHELD
                    break


def _without_bodies(data: Mapping[Any, Any]) -> dict[Any, Any]:
    """A copy of an SDK's request or response dict: bodies withheld, and headers (or gRPC
    metadata) whose names are sensitive (``Authorization``, ``X-Amz-Security-Token``)."""
    out: dict[Any, Any] = {}
    for key, item in data.items():
        if str(key).lower() in _BODY_FIELDS:
            out[key] = WITHHELD
        elif str(key).lower() in ("headers", "metadata") and isinstance(item, Mapping):
            out[key] = {h: WITHHELD if is_sensitive_name(str(h)) else v for h, v in item.items()}
        else:
            out[key] = item
    return out


_sdk_filter = SdkBodyFilter("pipekey.sdk")


def guard_sdk_logs() -> None:
    """Attach :class:`SdkBodyFilter` to every logger in ``SDK_BODY_LOGGERS`` (idempotent;
    the SDKs need not be imported yet)."""
    for name in SDK_BODY_LOGGERS:
        logger = logging.getLogger(name)
        if _sdk_filter not in logger.filters:
            logger.addFilter(_sdk_filter)


def install(loggers: Iterable[str] = ("", "airflow.task")) -> Redactor:
    """Attach the redactor to log records, the handlers of ``loggers`` and structlog, and
    guard the SDKs' body logging (idempotent)."""
    _install_record_factory()
    guard_sdk_logs()
    for name in loggers:
        logger = logging.getLogger(name)
        for target in [logger, *logger.handlers]:
            if _redactor not in target.filters:
                target.addFilter(_redactor)
    _install_structlog()
    return _redactor


def _install_record_factory() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "pipekey", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redactor.filter(record)
        return record

    factory.pipekey = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _install_structlog() -> None:
    structlog = sys.modules.get("structlog")  # only if the application uses it already
    if structlog is None:
        return
    processors = list(structlog.get_config().get("processors", []))
    if _redactor in processors or not processors:
        return
    structlog.configure(processors=[*processors[:-1], _redactor, processors[-1]])
