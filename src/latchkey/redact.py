"""Keep resolved values out of logs: a masker for stdlib logging and structlog.

Every value the chain resolves in this process is registered (:func:`register`). The masker
replaces it, and its URL-encoded, base64 and JSON-escaped forms, with ``***``; it also masks
token shapes whether registered or not: AWS access key ids, PEM blocks and JWTs.
:func:`install` puts it in a log-record factory (every logger, however late its handlers are
added), as a ``logging.Filter`` on the root logger, its handlers and any others named (which
also scrubs traceback text, chained causes included), and, when structlog is configured, as
a processor ahead of its renderer.

This is what guards Airflow task logs under ``dag.test()`` and ``airflow tasks test``, where
Airflow switches its own masking off.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
from typing import Any, Iterable, MutableMapping
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "Redactor", "install", "redactor", "register"]

MASK = "***"
MIN_LENGTH = 4  # shorter values would mask ordinary words
TOKEN_SHAPES = re.compile(
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"                                  # AWS access key ids
    r"|-----BEGIN [A-Z0-9 ]+-----[\s\S]*?-----END [A-Z0-9 ]+-----"    # PEM blocks
    r"|\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")  # JWTs


def encodings(value: str) -> set[str]:
    """The forms a value takes in logs: as is, URL-encoded, base64 and JSON-escaped."""
    raw = value.encode("utf-8")
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
             base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    forms |= {f.rstrip("=") for f in forms if f.endswith("=")}
    return {f for f in forms if len(f) >= MIN_LENGTH}


class Redactor(logging.Filter):
    """Replaces registered values in log records and structlog events."""

    def __init__(self) -> None:
        super().__init__("latchkey")
        self._lock = threading.Lock()
        self._needles: tuple[str, ...] = ()
        self._known: set[str] = set()

    def register(self, value: str | None) -> None:
        """Mask ``value`` (and its URL-encoded forms) from now on."""
        if not value or len(value) < MIN_LENGTH or value in self._known:
            return
        forms = encodings(value)
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

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]):
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


def install(loggers: Iterable[str] = ("", "airflow.task")) -> Redactor:
    """Attach the redactor to log records, the handlers of ``loggers`` and structlog
    (idempotent)."""
    _install_record_factory()
    for name in loggers:
        logger = logging.getLogger(name)
        for target in [logger, *logger.handlers]:
            if _redactor not in target.filters:
                target.addFilter(_redactor)
    _install_structlog()
    return _redactor


def _install_record_factory() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "latchkey", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redactor.filter(record)
        return record

    factory.latchkey = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _install_structlog() -> None:
    structlog = sys.modules.get("structlog")  # only if the application uses it already
    if structlog is None:
        return
    processors = list(structlog.get_config().get("processors", []))
    if _redactor in processors or not processors:
        return
    structlog.configure(processors=[*processors[:-1], _redactor, processors[-1]])
