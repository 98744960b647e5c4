"""Connections: Airflow's URI and JSON forms, parity with Airflow itself, hidden passwords."""

from __future__ import annotations

import json
import logging
import string
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipekey import Connection, InvalidConnection

from ..extras import need

FAKE_PW = "fake-p@ss:w/rd?#&=%"


@pytest.mark.parametrize("uri, expected", [
    pytest.param("postgres://user:p%40ss@db.example.com:5432/analytics?sslmode=require",
                 dict(conn_type="postgres", host="db.example.com", port=5432, login="user",
                      password="p@ss", schema="analytics", extra={"sslmode": "require"}),
                 id="postgres"),
    pytest.param("postgresql://u@h/db", dict(conn_type="postgres", login="u", host="h",
                                             schema="db"), id="postgresql-alias"),
    pytest.param("google-cloud-platform://?project=p1",
                 dict(conn_type="google_cloud_platform", host="", extra={"project": "p1"}),
                 id="dash-type"),
    pytest.param("http://https%3A%2F%2Fapi.example.com:8443/v1",
                 dict(conn_type="http", host="https://api.example.com", port=8443, schema="v1"),
                 id="encoded-host-with-protocol"),
    pytest.param("http://https://api.example.com/v1",
                 dict(conn_type="http", host="https://api.example.com", schema="v1"),
                 id="host-with-protocol"),
    pytest.param("postgres://u:pw@[::1]:5432/db",
                 dict(conn_type="postgres", host="::1", port=5432, login="u", password="pw",
                      schema="db"), id="ipv6"),
    pytest.param("aws://?__extra__=%7B%22region_name%22%3A+%22eu-central-1%22%2C+%22n%22%3A+1%7D",
                 dict(conn_type="aws", host="", extra={"region_name": "eu-central-1", "n": 1}),
                 id="__extra__"),
    pytest.param("my-conn-type://:@/", dict(conn_type="my_conn_type", host="", login="",
                                            password="", schema=""), id="empty-parts"),
])
def test_parse_known_uris(uri: str, expected: dict) -> None:
    """Documented URI shapes parse to the expected fields."""
    conn = Connection.from_uri(uri)
    for name, value in expected.items():
        assert getattr(conn, name) == value, name


@pytest.mark.parametrize("uri, message", [
    pytest.param(f"postgres://u:{quote(FAKE_PW, safe='')}@h:99999/db",
                 "the port at character", id="port-range"),
    pytest.param("postgres://u:fake-pw-x@h:abc/db", "is not an integer", id="port-text"),
    pytest.param("a://b://c://fake-pw-y", "more than two '://'", id="three-schemes"),
    pytest.param("http://u:fake-pw-z@https://h", "may not hold '@' or ':'", id="bad-protocol"),
    pytest.param("postgres://u:fake-pw-w@[::1/db", "not a URI", id="bad-ipv6"),
    pytest.param("aws://?__extra__=fake-pw-v", "extra is not valid JSON", id="bad-extra"),
    pytest.param("aws://?__extra__=%5B1%5D", "extra must be a JSON object", id="extra-list"),
])
def test_parse_errors_name_the_part_not_the_uri(uri: str, message: str) -> None:
    """A bad URI raises InvalidConnection naming the problem; no part of the URI is quoted."""
    with pytest.raises(InvalidConnection) as info:
        Connection.from_uri(uri, conn_id="warehouse")
    text = str(info.value)
    assert message in text and "connection 'warehouse'" in text
    assert "fake" not in text and "@" not in text.split(":", 1)[1].replace("'@'", "")
    assert info.value.__cause__ is None


def test_password_never_in_repr_str_or_logs(caplog) -> None:
    """repr, str, f-strings and logging of a connection show no password."""
    conn = Connection.from_uri("postgres://user:fake-hunter2-pw@h/db")
    logging.getLogger("test").warning("conn %s %r", conn, conn)
    for text in (repr(conn), str(conn), f"{conn}", caplog.text):
        assert "fake-hunter2-pw" not in text
    assert "password='***'" in repr(conn)


def test_json_form_round_trip_and_errors() -> None:
    """The JSON form parses and renders like Airflow's; bad JSON names the field."""
    conn = Connection.from_json('{"conn_type": "postgresql", "host": "h", "port": "5432", '
                                '"login": "u", "password": "fake-pw", "extra": "{\\"a\\": 1}"}')
    assert (conn.conn_type, conn.port, conn.extra) == ("postgres", 5432, {"a": 1})
    assert Connection.from_json(conn.to_json()) == conn
    assert json.loads(conn.to_json()) == {"conn_type": "postgres", "host": "h", "port": 5432,
                                          "login": "u", "password": "fake-pw", "extra": {"a": 1}}
    for bad, message in [('{"port": "x", "password": "fake-pw"}', "port is not an integer"),
                         ('{"hots": "h"}', r"unknown field \(field 1 of the object\)"),
                         ('{"password": "fake-pw"', "not valid JSON"),
                         ('[1]', "must be an object")]:
        with pytest.raises(InvalidConnection, match=message) as info:
            Connection.from_json(bad, conn_id="c")
        assert "fake-pw" not in str(info.value)


@pytest.mark.parametrize("uri", [
    pytest.param("po stgres://u:fake-pw-acct42@host/db", id="space"),
    pytest.param("my_type://u:fake-pw-acct42@host/db", id="underscore"),
    pytest.param("fake-pw-acct42", id="no-scheme"),
    pytest.param("pö://u:fake-pw-acct42@host", id="non-ascii"),
])
def test_uri_without_a_valid_scheme_is_refused(uri: str) -> None:
    """A type that is not a URI scheme is refused, naming the part: it is never parsed into a
    connection whose schema (and repr) holds the rest of the URI, password included."""
    with pytest.raises(InvalidConnection) as info:
        Connection.from_value(uri, conn_id="warehouse")
    text = str(info.value)
    assert "connection 'warehouse' URI" in text and "fake-pw" not in text
    assert "type" in text


def test_json_unknown_field_name_is_not_quoted() -> None:
    """An unknown JSON field is named by position (a misplaced value may sit in the name)."""
    with pytest.raises(InvalidConnection) as info:
        Connection.from_json('{"host": "h", "fake-pw-acct42": "x"}', conn_id="c")
    assert "fake-pw-acct42" not in str(info.value)
    assert "unknown field (field 2 of the object)" in str(info.value)


def test_json_with_airflows_secrets_manager_alias_words() -> None:
    """Connections stored for Airflow's SecretsManagerBackend name their fields with alias
    words (user, pass, engine, database...); the first word of a field wins, as in Airflow.
    (These raised before: an unknown field.)"""
    conn = Connection.from_json('{"user": "u", "pass": "fake-pw-alias", "server": "h", '
                                '"port": 5432, "database": "d", "engine": "postgresql", '
                                '"username": "ignored"}', conn_id="c")
    assert (conn.conn_type, conn.login, conn.password, conn.host, conn.port, conn.schema) == \
        ("postgres", "u", "fake-pw-alias", "h", 5432, "d")
    assert "fake-pw-alias" not in repr(conn)
    with pytest.raises(InvalidConnection, match="unknown field"):
        Connection.from_json('{"usuario": "u"}', conn_id="c")  # extra_conn_words: compat only


def test_userinfo_in_host_is_masked_in_repr() -> None:
    """A host that carries ``user:password@`` shows as ``***@`` in repr and str."""
    conn = Connection.from_json('{"conn_type": "http", '
                                '"host": "https://fake-user:fake-pw-acct42@api.example.com"}')
    assert conn.host == "https://fake-user:fake-pw-acct42@api.example.com"
    assert "host='https://***@api.example.com'" in repr(conn)
    assert "fake-pw-acct42" not in repr(conn) + str(conn)


def test_from_value_and_airflow_env() -> None:
    """Values are JSON or URI; AIRFLOW_CONN_<ID> variables are read and written."""
    environ = {"AIRFLOW_CONN_MY_DB": "postgres://u:fake@h/db",
               "AIRFLOW_CONN_MY_JSON": '{"conn_type": "http", "host": "example.com"}'}
    assert Connection.from_env("my_db", environ).host == "h"
    assert Connection.from_env("my_json", environ).conn_type == "http"
    assert Connection.from_env("absent", environ) is None
    conn = Connection.from_value("postgres://u:fake@h/db")
    assert conn.to_airflow_env("my-db") == {"AIRFLOW_CONN_MY_DB": "postgres://u:fake@h/db"}


@pytest.mark.parametrize("conn_id", ["my-db", "my.db", "My_Db", "warehouse"])
def test_from_env_reads_what_to_airflow_env_writes(conn_id: str) -> None:
    """One variable-name rule (pipekey.childenv) both ways: a connection written for a child
    by to_airflow_env (and run.env()) is read back by from_env under the same conn_id."""
    conn = Connection.from_value("postgres://u:fake-pw@h/db")
    back = Connection.from_env(conn_id, conn.to_airflow_env(conn_id))
    assert back is not None and back.to_uri() == conn.to_uri()


# -- parity with Apache Airflow -------------------------------------------------------------
texts = st.one_of(st.none(), st.text(
    alphabet=string.ascii_letters + string.digits + " -_.~:/@?#&=%+[]!$'()*,;é€", max_size=12))
hosts = st.one_of(st.none(), st.sampled_from(["db.example.com", "::1", "10.0.0.1", "h",
                                              "https://api.example.com", "UPPER.example.com"]),
                  texts)
extras = st.dictionaries(
    st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8),
    st.one_of(st.text(alphabet=string.printable, max_size=10), st.integers(-5, 5),
              st.booleans(), st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3))),
    max_size=3)
connections = st.builds(
    Connection,
    conn_type=st.sampled_from(["postgres", "mysql", "aws", "http", "google_cloud_platform",
                               "snowflake", "my_type", "s3"]),
    host=hosts, port=st.one_of(st.none(), st.integers(1, 65535)), login=texts,
    password=texts, schema=texts, extra=extras)


def _fields(c) -> dict:
    extra = c.extra if isinstance(c, Connection) else c.extra_dejson
    return {"conn_type": c.conn_type, "host": c.host, "port": c.port, "login": c.login,
            "password": c.password, "schema": c.schema, "extra": extra}


def _decoded_like_pipekey(fields: dict, uri: str) -> dict:
    """The Task SDK keeps flat query values as strings (``?retries=3`` is "3"); pipekey, like
    the core class, decodes JSON values (3). The second documented difference: decoding the
    SDK's strings the same way gives pipekey's fields (even for "0E0", which JSON reads as
    0.0 and so cannot be compared by rendering pipekey's value back to text)."""
    if "__extra__=" in uri:
        return fields
    return {**fields, "extra": {k: _json_or_text(v) for k, v in fields["extra"].items()}}


def _json_or_text(value):
    if not isinstance(value, str) or not value:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _as_core_sees_it(fields: dict) -> dict:
    """Airflow's core Connection stores an empty password as None (its Fernet setter skips
    falsy values); the Task SDK and pipekey keep ''. The one documented difference."""
    return {**fields, "password": fields["password"] or None}


@pytest.fixture(scope="module")
def airflow_classes():
    need("airflow")
    from airflow.models.connection import Connection as CoreConnection
    from airflow.sdk import Connection as SdkConnection

    logging.getLogger("airflow").setLevel(logging.ERROR)
    return CoreConnection, SdkConnection


def _airflow_kwargs(conn: Connection) -> dict:
    return dict(conn_id="c", conn_type=conn.conn_type, host=conn.host, port=conn.port,
                login=conn.login, password=conn.password, schema=conn.schema,
                extra=json.dumps(conn.extra) if conn.extra else None)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conn=connections)
def test_parity_with_airflow(airflow_classes, conn: Connection) -> None:
    """pipekey renders the URI Airflow renders, and pipekey and Airflow (core and Task SDK)
    parse each other's output to the same fields."""
    core_cls, sdk_cls = airflow_classes
    ours = conn.to_uri()
    assert ours == sdk_cls(**_airflow_kwargs(conn)).get_uri()
    core = core_cls(**_airflow_kwargs(conn))
    if conn.password != "":
        assert ours == core.get_uri()
    for uri in (ours, core.get_uri()):
        parsed_by_us = Connection.from_uri(uri)
        assert _fields(parsed_by_us) == _decoded_like_pipekey(
            _fields(sdk_cls.from_uri(uri, conn_id="c")), uri)
        assert _as_core_sees_it(_fields(parsed_by_us)) == _fields(core_cls(conn_id="c", uri=uri))
        if parsed_by_us.password != "":  # see _as_core_sees_it
            assert parsed_by_us.to_uri() == core_cls(conn_id="c", uri=uri).get_uri()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conn=connections)
def test_json_parity_with_airflow(airflow_classes, conn: Connection) -> None:
    """Airflow's from_json reads our JSON form to the same fields, and we read Airflow's."""
    core_cls, _ = airflow_classes
    theirs = core_cls.from_json(conn.to_json(), conn_id="c")
    ours = Connection.from_json(conn.to_json())
    assert _as_core_sees_it(_fields(ours)) == _as_core_sees_it(_fields(theirs))
    assert _fields(Connection.from_json(theirs.as_json())) == _fields(theirs)


# -- conformance: cases from Airflow's own suite (airflow-core/tests/unit/always/
#    test_connection.py, test_from_uri_params), expected fields as Airflow states them ----
AIRFLOW_URI_CASES = [
    ("scheme://user:password@host%2Flocation:1234/schema",
     dict(conn_type="scheme", host="host/location", schema="schema", login="user",
          password="password", port=1234, extra={})),
    ("scheme://user:password@host%2Flocation:1234/schema?extra1=a%20value&extra2=%2Fpath%2F",
     dict(host="host/location", port=1234, extra={"extra1": "a value", "extra2": "/path/"})),
    ("scheme://user:password@host%2Flocation:1234/schema?extra1=a%20value&extra2=",
     dict(extra={"extra1": "a value", "extra2": ""})),
    ("scheme://user:password@host%2Flocation%3Ax%3Ay:1234/schema?extra1=a%20value",
     dict(host="host/location:x:y", port=1234)),
    ("scheme://domain%2Fuser:password@host%2Flocation%3Ax%3Ay:1234/schema",
     dict(login="domain/user", host="host/location:x:y")),
    ("scheme://user:password%20with%20space@host:1234/schema%2Ftest",
     dict(host="host", schema="schema/test", password="password with space")),
    ("scheme://user:password%20with%20space@host:1234",
     dict(host="host", schema="", port=1234)),
    ("google-cloud-platform://?key_path=%2Fkeys%2Fkey.json&project=airflow",
     dict(conn_type="google_cloud_platform", host="", schema="", login=None, password=None,
          port=None, extra={"key_path": "/keys/key.json", "project": "airflow"})),
    ("scheme://host:1234", dict(host="host", schema="", login=None, password=None, port=1234)),
    ("scheme://%2FTmP%2F:1234", dict(host="/TmP/", port=1234)),
    ("scheme:///airflow", dict(conn_type="scheme", schema="airflow")),
    ("scheme://@:1234", dict(conn_type="scheme", port=1234)),
    ("scheme://:password%2F%21%40%23%24%25%5E%26%2A%28%29%7B%7D@",
     dict(password="password/!@#$%^&*(){}")),
    ("scheme://login%2F%21%40%23%24%25%5E%26%2A%28%29%7B%7D@", dict(login="login/!@#$%^&*(){}")),
    ("scheme://host/schema?valid_json=%7B%22key%22%3A%22val%22%7D&invalid_json=just_a_string"
     "&empty_val=", dict(extra={"valid_json": {"key": "val"}, "invalid_json": "just_a_string",
                                "empty_val": ""})),
]


@pytest.mark.parametrize("uri, expected", [pytest.param(u, e, id=f"airflow-{i}")
                                           for i, (u, e) in enumerate(AIRFLOW_URI_CASES)])
def test_airflow_uri_conformance(uri: str, expected: dict) -> None:
    """Airflow's own from_uri cases parse to the fields Airflow's suite expects, and our URI
    for them parses back to the same connection."""
    conn = Connection.from_uri(uri)
    assert {k: getattr(conn, k) for k in expected} == expected
    assert Connection.from_uri(conn.to_uri()) == conn


@pytest.mark.parametrize("port", [
    pytest.param(-1, id="negative"), pytest.param(65536, id="too-big"),
    pytest.param(1.5, id="fraction"), pytest.param("1.5", id="fraction-text"),
    pytest.param(True, id="bool"), pytest.param("-1", id="negative-text"),
])
def test_json_port_must_be_a_whole_number_0_to_65535(port) -> None:
    """from_json refuses ports outside 0-65535 and fractions; the message names the port
    field and never the password."""
    value = json.dumps({"conn_type": "postgres", "port": port, "password": "fake-pw-port9"})
    with pytest.raises(InvalidConnection, match="port") as info:
        Connection.from_json(value, conn_id="warehouse")
    assert "fake-pw-port9" not in str(info.value) and "'warehouse'" in str(info.value)


@pytest.mark.parametrize("port", [-1, 65536, "5432", 5432.0, True])
def test_constructor_validates_the_port(port) -> None:
    """Connection(...) itself refuses a port that is not a whole number from 0 to 65535."""
    with pytest.raises(InvalidConnection, match="port must be a whole number from 0 to 65535"):
        Connection(conn_type="postgres", port=port)


def test_json_ports_accepted() -> None:
    """0 and 65535, as numbers or digit strings (and 5432.0 from a JSON writer), are ports."""
    assert [Connection.from_json({"port": p}).port for p in (0, "0", 65535, "65535", 5432.0)] \
        == [0, 0, 65535, 65535, 5432]


def test_port_zero_survives_a_uri_round_trip() -> None:
    """A port of 0 is rendered (postgres://h:0) and read back as 0, not None."""
    conn = Connection(conn_type="postgres", host="h", port=0)
    assert conn.to_uri() == "postgres://h:0"
    assert Connection.from_uri(conn.to_uri()).port == 0
    assert Connection.from_uri(Connection(conn_type="x", port=0).to_uri()).port == 0


def test_json_keeps_empty_strings_in_airflows_key_order() -> None:
    """to_json keeps '' (an empty password stays '' through a JSON round trip, as in Airflow's
    as_json) and writes keys in Airflow's order; None fields and an empty extra are left out."""
    conn = Connection(conn_type="postgres", description="d", host="", login="loader",
                      password="", schema="", port=0, extra={"sslmode": "require"})
    data = json.loads(conn.to_json())
    assert list(data) == ["conn_type", "description", "host", "login", "password", "schema",
                          "port", "extra"]
    assert data["password"] == "" and data["host"] == "" and data["port"] == 0
    assert Connection.from_json(conn.to_json()) == conn
    assert json.loads(Connection(conn_type="http").to_json()) == {"conn_type": "http"}


@pytest.mark.parametrize("uri", [
    "postgres://u:12/fake-tail-pw@h/db",        # '/' in the password: the tail became schema
    "postgres://u:fake?tail-pw@h:5432/db",      # '?': the tail became an extra's key
    "postgres://u:fake#tail-pw@h/db",           # '#': the tail became the fragment
])
def test_unencoded_delimiter_in_a_password_is_refused_without_the_password(uri) -> None:
    """urlsplit ends the userinfo at the first '/', '?' or '#': the rest of the password landed
    in ``schema`` or ``extra`` and so in ``repr``. A raw '@' after the host is refused."""
    with pytest.raises(InvalidConnection) as err:
        Connection.from_uri(uri, "warehouse")
    message = str(err.value)
    assert "percent-encoded" in message and "'warehouse'" in message
    assert "tail" not in message and "fake" not in message


def test_percent_encoded_delimiters_still_parse() -> None:
    conn = Connection.from_uri("postgres://u:fake%2Ftail%3Fpw%23x@h:5432/db?sslmode=require")
    assert conn.password == "fake/tail?pw#x" and conn.schema == "db"
    assert "tail" not in repr(conn)
