"""pipekey's own masker: logging records and structlog events lose registered values."""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipekey import Connection, redact
from pipekey.redact import Redactor


@pytest.fixture
def logger_with_redactor():
    # The process-wide redactor masks every record as it is made; values earlier tests served
    # (a short "fake") would mask part of this test's value before its own redactor saw it.
    shared = redact.redactor()
    needles, known = shared._needles, set(shared._known)
    shared._needles, shared._known = (), set()
    r = Redactor()
    logger = logging.getLogger("pipekey.test.redact")
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
    shared._needles, shared._known = needles, known


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
    logger = logging.getLogger("pipekey.test.install")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        redact.install(["pipekey.test.install"])
        redact.install(["pipekey.test.install"])
        assert handler.filters.count(redact.redactor()) == 1
        assert logger.filters.count(redact.redactor()) == 1
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(redact.redactor())
        handler.removeFilter(redact.redactor())


# -- the secrets inside a value: lines, URL passwords, connection extras -------------------
FAKE_PEM = ("-----BEGIN PRIVATE KEY-----\n"
            "MIIEfakeFAKEfakeNOTaREALkeyAAAAfakeFAKEfake0123456789abcdefghijklmnop\n"
            "ZmFrZS1wZW0tbGluZS10d28tbm90LWEta2V5LWZha2UtZmFrZS1mYWtlLWZha2U\n"
            "bGFzdC1saW5lLWZha2U=\n"
            "-----END PRIVATE KEY-----\n")


def test_each_line_of_a_multi_line_value_is_masked() -> None:
    """A PEM key printed line by line (as ``pipekey run`` pumps output) loses every line."""
    r = Redactor()
    r.register(FAKE_PEM)
    for line in FAKE_PEM.splitlines():
        assert "fake" not in r.redact(line + "\n").lower() or line.startswith("-----")
    assert r.redact("-----BEGIN PRIVATE KEY-----") == "-----BEGIN PRIVATE KEY-----"


def test_a_urls_password_is_masked_alone() -> None:
    """A value that is a URL with userinfo: its password is masked wherever it appears."""
    r = Redactor()
    r.register("postgres://loader:fake-url-p%40ss@db.internal:5432/analytics")
    assert r.redact("password=fake-url-p@ss") == "password=***"
    assert r.redact("fake-url-p%40ss") == "***"


@pytest.mark.parametrize("extra, secrets", [
    pytest.param({"token": "fake-token-acct42"}, ["fake-token-acct42"], id="token"),
    pytest.param({"Api-Key": "fake-api-key-1234"}, ["fake-api-key-1234"], id="name-contains"),
    pytest.param({"client_secret": "fake-client-secret"}, ["fake-client-secret"], id="secret"),
    pytest.param({"keyfile_dict": {"private_key": FAKE_PEM, "client_id": "1234567"}},
                 [FAKE_PEM, "1234567"], id="nested-under-sensitive"),
    pytest.param({"config": '{"auth": {"access_token": "fake-access-tok"}}'},
                 ["fake-access-tok"], id="json-in-a-string"),
    pytest.param({"header": "ghp_fakeFAKEfake000000000000000000000"},
                 ["ghp_fakeFAKEfake000000000000000000000"], id="token-prefix"),
    pytest.param({"note": FAKE_PEM}, [FAKE_PEM], id="pem-anywhere"),
    pytest.param({"x": "Zm9vYmFyLWZha2UtdG9rZW4tYWNjdDQy9Qx"},
                 ["Zm9vYmFyLWZha2UtdG9rZW4tYWNjdDQy9Qx"], id="high-entropy"),
])
def test_sensitive_extras_are_found(extra, secrets) -> None:
    """Fields Airflow's masker treats as sensitive (name contains), and credential-shaped
    strings, at any depth and in JSON text, are what a connection's extra must not show."""
    assert redact.sensitive_values(extra) == secrets


def test_ordinary_extras_are_not_secrets() -> None:
    """Regions, ARNs, hosts, UUIDs, warehouse names and flags stay readable in logs."""
    extra = {"region_name": "eu-central-1", "role_arn": "arn:aws:iam::123456789012:role/ads",
             "account": "xy12345.eu-central-1", "warehouse": "COMPUTE_WH", "sslmode": "require",
             "request_id": "550e8400-e29b-41d4-a716-446655440000", "verify": True, "port": 5439}
    assert redact.sensitive_values(extra) == []


@settings(max_examples=60, deadline=None)
@given(password=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                        min_size=6, max_size=30),
       token=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                     min_size=6, max_size=30).filter(lambda t: t.strip() == t),
       flat=st.booleans())
def test_connection_secrets_are_parts_of_both_forms(password, token, flat) -> None:
    """Registering a connection's stored value (URI or JSON form) masks its password and its
    sensitive extras on their own."""
    extra = {"api_token": token} if flat else {"nested": {"api_token": token}, "n": 1}
    conn = Connection(conn_type="http", host="api.example.com", login="u", password=password,
                      extra=extra)
    for stored in (conn.to_uri(), conn.to_json()):
        parts = redact.secret_parts(stored)
        assert password in parts and token in parts
    assert conn.secret_values() == [password, token]


# -- SDK debug logs ------------------------------------------------------------------------
def _record(name: str, msg: str, args=(), **extra) -> logging.LogRecord:
    record = logging.getLogger(name).makeRecord(name, logging.DEBUG, "f.py", 1, msg, args, None,
                                                extra=extra or None)
    return record


def test_sdk_bodies_are_withheld() -> None:
    """botocore's params and response bodies, Azure's network trace and the GCP client's
    httpRequest/httpResponse payloads lose their bodies and credential headers."""
    f = redact.SdkBodyFilter()
    secret = "fake-sdk-body-value"
    records = [
        _record("botocore.endpoint", "Making request for %s with params: %s",
                ("OperationModel(name=PutParameter)",
                 {"body": f'{{"Value": "{secret}"}}'.encode(), "url": "https://ssm",
                  "headers": {"X-Amz-Security-Token": secret}})),
        _record("botocore.parsers", "Response body:\n%r", (f'{{"Value": "{secret}"}}'.encode(),)),
        _record("azure.core.pipeline.policies._universal",
                "Response status: 200\nResponse headers:\nResponse content:\n"
                f"{{\"value\": \"{secret}\"}}"),
        _record("google.cloud.secretmanager_v1.services.secret_manager_service.transports.rest",
                "Received response", httpResponse={"payload": {"data": secret}, "status": 200},
                httpRequest={"headers": {"Authorization": f"Bearer {secret}"}, "url": "u"}),
    ]
    for record in records:
        assert f.filter(record)
        shown = record.getMessage() + repr(record.__dict__.get("httpResponse")) + repr(
            record.__dict__.get("httpRequest"))
        assert secret not in shown and redact.WITHHELD in shown
    assert "OperationModel(name=PutParameter)" in records[0].getMessage()


def test_sdk_bodies_are_withheld_from_records_the_masker_already_formatted() -> None:
    """A record the masker rewrote first (a token shape or registered value in the body made
    it format the message and drop the args) still loses its body: nothing is left to parse,
    so everything after the operation is withheld."""
    f = redact.SdkBodyFilter()
    secret = "fake-sdk-body-value-unregistered"
    records = [
        _record("botocore.parsers",
                f'Response body:\nb\'{{"Value": "{secret}"}}, {{"Value": "***"}}\'', None),
        _record("botocore.endpoint", "Making request for OperationModel(name=PutParameter) "
                f"with params: {{'body': b'{{\"Value\": \"{secret}\"}}'}}", None),
    ]
    for record in records:
        assert f.filter(record)
        assert secret not in record.getMessage() and redact.WITHHELD in record.getMessage()
    assert "OperationModel(name=PutParameter)" in records[1].getMessage()


def test_remote_backends_guard_sdk_loggers() -> None:
    """Building any remote backend attaches the body filter to every SDK body logger,
    whether or not the application called redact.install()."""
    from pipekey.backends.aws_ssm import SsmBackend, SsmConfig

    for name in redact.SDK_BODY_LOGGERS:
        logging.getLogger(name).removeFilter(redact._sdk_filter)
    SsmBackend("ssm", SsmConfig(type="aws_ssm", region="eu-central-1"))  # no call made
    assert all(redact._sdk_filter in logging.getLogger(n).filters
               for n in redact.SDK_BODY_LOGGERS)


@pytest.mark.parametrize("form", ["uri", "json"])
def test_a_runs_connection_extras_are_masked(form) -> None:
    """A connection's sensitive extras (by name, nested, credential-shaped) are masked in
    this process's logs once a run has it, whichever form it is stored in."""
    from pathlib import Path

    import pipekey
    from pipekey.manifest import parse_manifest
    from pipekey.testing import MemoryBackend

    secrets = [f"fake-extra-tok-{form}-acct42", f"fake-extra-key-{form}-acct42",
               f"ghp_fakeEXTRAfake{form}000000000000000"]
    conn = Connection(conn_type="http", host="api.example.com", extra={
        "api_token": secrets[0], "auth": {"private_key": secrets[1]}, "header": secrets[2],
        "endpoint_region": "eu-central-1"})
    stored = conn.to_uri() if form == "uri" else conn.to_json()
    manifest = parse_manifest({"pipelines": {"p": {
        "scope": "teams/p", "connections": {"api": "connections/api"}}}}, Path("m.toml"))
    lk = pipekey.Pipekey([MemoryBackend("mem", {"connections/api": stored})],
                           manifest=manifest)
    with lk.pipeline("p") as run:
        extra = run.connection("api").extra
    text = redact.redactor().redact(f"{extra} {extra['api_token']} {secrets[1]} {secrets[2]}")
    assert [s for s in secrets if s in text] == []
    assert "eu-central-1" in text


def test_python_repr_forms_are_masked(caplog) -> None:
    """A value with quotes or an unprintable character looks different under %r (and inside a
    logged dict or os.environ): that form is masked too."""
    r = redact.Redactor()
    for value in ["fakePa'ss\"word-1234", "fake\x7fdel-secret-9", "fake-\u00e9t\u00e9-token"]:
        r.register(value)
        for text in [f"repr {value!r}", f"dict {({'cfg': value})}", f"ascii {ascii(value)}"]:
            masked = r.redact(text)
            assert value not in masked and repr(value)[1:-1] not in masked, text
            assert ascii(value)[1:-1] not in masked, text


def _stable_middle(text: bytes, start: int, length: int, urlsafe: bool) -> str:
    """The base64 characters of ``text`` whose 6 bits all fall in ``text[start:start+length]``,
    read off the encoding of the whole text (so they are what a log would show)."""
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    encoded = encode(text).decode()
    first = -(-8 * start // 6)  # first character starting at or after the value's first bit
    last = 8 * (start + length) // 6  # characters ending at or before its last bit
    return encoded[first:last]


@settings(max_examples=300, deadline=None)
@given(value=st.text(st.characters(blacklist_categories=("Cs",)), min_size=8, max_size=40),
       prefix=st.binary(max_size=11), suffix=st.binary(max_size=5), urlsafe=st.booleans())
def test_base64_at_any_offset_is_masked(value: str, prefix: bytes, suffix: bytes,
                                        urlsafe: bool) -> None:
    """A value inside a longer base64 text (``Basic b64("bob:" + password)``), starting at
    any byte offset and followed by anything, standard or URL-safe alphabet: masked."""
    r = Redactor()
    r.register(value)
    raw = value.encode("utf-8")
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(
        prefix + raw + suffix).decode()
    middle = _stable_middle(prefix + raw + suffix, len(prefix), len(raw), urlsafe)
    masked = r.redact(f"Authorization: Basic {text}")
    assert redact.MASK in masked and middle not in masked


@pytest.mark.parametrize("prefix", ["", "b", "bo", "bob:", "airflow:"])
@pytest.mark.parametrize("urlsafe", [False, True], ids=["standard", "urlsafe"])
def test_basic_auth_header_is_masked(prefix: str, urlsafe: bool) -> None:
    """The forms issue 25 found unmasked: b64("bob:" + password), b64("airflow:" + password),
    in both alphabets (a value with bytes that encode to + and / in one, - and _ in the
    other)."""
    r = Redactor()
    password = "fake-basic-p4ss\u00ff\u00fe?>"
    r.register(password)
    text = f"{prefix}{password}".encode()
    header = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(text).decode()
    masked = r.redact(f"Authorization: Basic {header}")
    middle = _stable_middle(text, len(prefix), len(password.encode()), urlsafe)
    assert masked.startswith("Authorization: Basic ") and redact.MASK in masked
    assert middle not in masked and len(middle) >= 16


def test_base64_middles_keep_the_minimum_length() -> None:
    """Every registered form, offset middles included, is at least MIN_LENGTH long: a
    middle too short to be safe is left out, as a value that short is; the shortest values
    registered (four bytes) still get their middles masked."""
    short = {m for m in redact.base64_middles(b"abc") if len(m) < redact.MIN_LENGTH}
    assert short and not short & redact.encodings("abc")  # 3 characters at offsets 1 and 2
    assert all(len(form) >= redact.MIN_LENGTH for v in ("abcd", "fake-value", "\u00e9t\u00e9s")
               for form in redact.encodings(v))
    r = Redactor()
    r.register("w0rd")
    assert "***" in r.redact(base64.b64encode(b"x:w0rd").decode())
