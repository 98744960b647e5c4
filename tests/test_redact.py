"""latchkey's own masker: logging records and structlog events lose registered values."""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest

from latchkey import redact
from latchkey.redact import Redactor


@pytest.fixture
def logger_with_redactor():
    r = Redactor()
    logger = logging.getLogger("latchkey.test.redact")
    logger.propagate = False
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(r)
    logger.addHandler(handler)
    yield r, logger, records
    logger.removeHandler(handler)


def test_values_and_their_url_forms_are_masked(logger_with_redactor) -> None:
    """A registered value, and its URL-encoded forms, never reach the handler."""
    r, logger, records = logger_with_redactor
    secret = "fake p@ss/word+1"
    r.register(secret)
    logger.warning("plain %s", secret)
    logger.warning("in a uri postgres://u:%s@h/db", quote(secret, safe=""))
    logger.warning("nothing secret here")
    assert records == ["plain ***", "in a uri postgres://u:***@h/db", "nothing secret here"]


def test_exception_text_is_masked(logger_with_redactor) -> None:
    """A traceback's text is scrubbed as well."""
    r, logger, records = logger_with_redactor
    r.register("fake-token-in-error")
    try:
        raise RuntimeError("failed with fake-token-in-error")
    except RuntimeError:
        logger.exception("boom")
    assert "fake-token-in-error" not in "\n".join(records)
    assert "RuntimeError: failed with ***" in records[0]


def test_short_values_are_not_registered() -> None:
    """Values under four characters would mask ordinary words; they are skipped."""
    r = Redactor()
    r.register("abc")
    assert r.redact("abc abcd") == "abc abcd"


def test_structlog_processor() -> None:
    """As a structlog processor it scrubs every string in the event."""
    r = Redactor()
    r.register("fake-structlog-secret")
    event = r(None, "info", {"event": "got fake-structlog-secret", "n": 3})
    assert event == {"event": "got ***", "n": 3}


def test_install_is_idempotent() -> None:
    """install() adds the process redactor once to a logger and its handlers."""
    logger = logging.getLogger("latchkey.test.install")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        redact.install(["latchkey.test.install"])
        redact.install(["latchkey.test.install"])
        assert handler.filters.count(redact.redactor()) == 1
        assert logger.filters.count(redact.redactor()) == 1
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(redact.redactor())
        handler.removeFilter(redact.redactor())
