"""Keep resolved values out of logs: a masker for stdlib logging and structlog.

Every value a run resolves can be registered (``register``); :func:`install` puts a
``logging.Filter`` on the root logger's handlers (and any others named) and, when structlog is
configured, a processor ahead of its renderer. Both replace each registered value, and its
URL-encoded forms, with ``***`` before anything is written.

This is what guards Airflow task logs under ``dag.test()`` and ``airflow tasks test``, where
Airflow switches its own masking off.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterable, MutableMapping
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "Redactor", "install", "redactor", "register"]

MASK = "***"
MIN_LENGTH = 4  # shorter values would mask ordinary words


class Redactor(logging.Filter):
    """Replaces registered values in log records and structlog events."""

    def __init__(self) -> None:
        super().__init__("latchkey")
        self._lock = threading.Lock()
        self._needles: tuple[str, ...] = ()

    def register(self, value: str | None) -> None:
        """Mask ``value`` (and its URL-encoded forms) from now on."""
        if not value or len(value) < MIN_LENGTH:
            return
        forms = {value, quote(value, safe=""), quote_plus(value)}
        with self._lock:
            # longest first, so a value containing another is masked whole
            self._needles = tuple(sorted(set(self._needles) | forms, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._needles:
            return True
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
            record.exc_text = self.redact(record.exc_text)
        return True

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]):
        """A structlog processor."""
        if self._needles:
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
    """Attach the redactor to the handlers of ``loggers`` and to structlog (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        for target in [logger, *logger.handlers]:
            if _redactor not in target.filters:
                target.addFilter(_redactor)
    _install_structlog()
    return _redactor


def _install_structlog() -> None:
    try:
        import structlog
    except ImportError:
        return
    processors = list(structlog.get_config().get("processors", []))
    if _redactor in processors or not processors:
        return
    structlog.configure(processors=[*processors[:-1], _redactor, processors[-1]])
