"""Conformance of the drop-in: Airflow's own SSM / Secrets Manager backends and
PipekeySecretsBackend with the same ``backend_kwargs``, side by side on the same data in moto
(over HTTP), case by case.

The cases transcribe the Amazon provider's unit tests of both backends
(providers/amazon/tests/unit/amazon/aws/secrets/test_systems_manager.py and
test_secrets_manager.py in apache/airflow; mocks of the client become real data, call counts
become moto's request counts), plus the Secrets Manager JSON cases of earlier provider
versions (alias words, ``extra_conn_words``) and a few of our own (``sep``, empty prefixes).
Every case asserts the same answer from both, unless it is listed in ``DIFFERENCES`` (each
documented in docs/airflow.md, "Switch from Airflow's backend"), where both answers are
asserted as documented. ``test_case_counts`` prints the tally.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from ..extras import need

pytestmark = pytest.mark.slow
need("airflow")
need("airflow", "airflow.providers.amazon")

REGION = "eu-west-3"  # this module's own data in the shared moto server
URI = "postgres://my-login:fake-pass-1@my-host:5432/my-schema?param1=val1&param2=val2"
JSON_CONN = json.dumps({"conn_type": "postgres", "login": "my-login", "password": "fake-pass-2",
                        "host": "my-host", "port": 5432, "schema": "my-schema",
                        "extra": {"param1": "val1", "param2": "val2"}})
PG = "postgresql://airflow:fake-pass-3@host:5432/airflow"
ROLE = "arn:aws:iam::222222222222:role/awesome-role"


@dataclass
class Case:
    """``data``: (name, value, type) stored first (type: SSM's String/SecureString, or
    "binary" for a Secrets Manager binary secret); ``calls``: (getter, id, team) asked of
    both backends, getter one of conn (get_conn_value), connection (get_connection's fields),
    var, config; ``multi_team``: [core] multi_team on; ``no_call``: the store is not asked;
    ``logged``: ids whose refusal both backends log."""

    backend: str  # "ssm" or "secrets_manager"
    kwargs: dict[str, Any]
    data: list[tuple[str, str, str]]
    calls: list[tuple[str, str, str | None]]
    multi_team: bool = False
    no_call: bool = False
    logged: list[str] = field(default_factory=list)


def _pattern_cases(backend: str) -> dict[str, Case]:
    prefixes = {"ssm": "/airflow", "secrets_manager": "airflow"}[backend]
    out = {}
    for kind, getter, folder in (("connections", "conn", "connections"),
                                 ("variables", "var", "variables"),
                                 ("config", "config", "config")):
        value = "fake-pattern-value" if getter != "conn" else PG
        for pattern, matches in (("test", True), (".*", True), ("T.*", True),
                                 ("dummy-pattern", False), (None, True)):
            out[f"{kind}_lookup_pattern[{pattern}]"] = Case(
                backend, {f"{kind}_lookup_pattern": pattern},
                [(f"{prefixes}/{folder}/test", value, "String")], [(getter, "test", None)],
                no_call=not matches)
    return out


SSM: dict[str, Case] = {
    "get_connection": Case("ssm", {}, [("/airflow/connections/fake_conn",
                                        "scheme://user:fake-pass-0@host:100", "String")],
                           [("connection", "fake_conn", None)]),
    "get_conn_value[json]": Case("ssm", {}, [("/airflow/connections/test_postgres", JSON_CONN,
                                              "String")],
                                 [("conn", "test_postgres", None),
                                  ("connection", "test_postgres", None)]),
    "get_conn_value[uri]": Case("ssm", {}, [("/airflow/connections/test_postgres", URI,
                                             "String")],
                                [("conn", "test_postgres", None),
                                 ("connection", "test_postgres", None)]),
    "get_conn_value_non_existent_key": Case(
        "ssm", {}, [("/airflow/connections/test_postgres", PG, "String")],
        [("conn", "test_mysql", None), ("connection", "test_mysql", None)]),
    "get_conn_value_with_team_name": Case(
        "ssm", {}, [("/airflow/connections/my_team--test_postgres", PG, "String")],
        [("conn", "test_postgres", "my_team")]),
    "global_caller_cannot_access_team_scoped_connection": Case(
        "ssm", {}, [("/airflow/connections/my_team--test_postgres", PG, "String")],
        [("conn", "my_team--test_postgres", None)], multi_team=True),
    "another_teams_secret_is_not_reachable": Case(
        "ssm", {}, [("/airflow/connections/my_team--test_postgres", PG, "String")],
        [("conn", "my_team--test_postgres", "other_team")], multi_team=True),
    "team_whose_name_extends_the_callers_is_not_reachable": Case(
        "ssm", {}, [("/airflow/connections/my_team--prod--test_postgres", PG, "String")],
        [("conn", "my_team--prod--test_postgres", "my_team")], multi_team=True),
    "team_scoped_lookup_cannot_reach_a_longer_teams_namespace": Case(
        "ssm", {}, [("/airflow/connections/my_team--prod--test_postgres", PG, "String")],
        [("conn", "prod--test_postgres", "my_team")], multi_team=True),
    "refusing_an_ambiguous_id_is_logged": Case(
        "ssm", {}, [("/airflow/connections/prod--test_postgres", PG, "String")],
        [("conn", "prod--test_postgres", None), ("var", "prod--hello", None),
         ("config", "prod--sql_alchemy_conn", None)], multi_team=True, no_call=True,
        logged=["prod--test_postgres", "prod--hello", "prod--sql_alchemy_conn"]),
    "ambiguous_id_resolves_when_multi_team_is_disabled": Case(
        "ssm", {}, [("/airflow/connections/prod--test_postgres", PG, "String")],
        [("conn", "prod--test_postgres", None)]),
    "team_caller_falls_back_to_global_connection": Case(
        "ssm", {}, [("/airflow/connections/test_postgres", PG, "String")],
        [("conn", "test_postgres", "non_existent_team")]),
    "get_variable": Case("ssm", {}, [("/airflow/variables/hello", "fake-world", "String")],
                         [("var", "hello", None)]),
    "get_config": Case("ssm", {}, [("/airflow/config/sql_alchemy_conn",
                                    "sqlite:///fake/airflow.db", "String")],
                       [("config", "sql_alchemy_conn", None)]),
    "get_variable_secret_string": Case(
        "ssm", {}, [("/airflow/variables/hello", "fake-world", "SecureString")],
        [("var", "hello", None)]),
    "get_variable_non_existent_key": Case(
        "ssm", {}, [("/airflow/variables/hello", "fake-world", "String")],
        [("var", "test_mysql", None)]),
    "get_variable_with_team_name": Case(
        "ssm", {}, [("/airflow/variables/my_team--hello", "fake-world", "String")],
        [("var", "hello", "my_team")]),
    "global_caller_cannot_access_team_scoped_variable": Case(
        "ssm", {}, [("/airflow/variables/my_team--hello", "fake-world", "String")],
        [("var", "my_team--hello", None)], multi_team=True),
    "passing_client_kwargs": Case(
        "ssm", {"use_ssl": False, "role_arn": ROLE, "region_name": "eu-south-1"},
        [("/airflow/variables/hello", "fake-world", "String")], [("var", "hello", None)]),
    "connection_prefix_none_value": Case(
        "ssm", {"connections_prefix": None},
        [("/airflow/connections/test_mysql", PG, "String")], [("conn", "test_mysql", None)],
        no_call=True),
    "variable_prefix_none_value": Case(
        "ssm", {"variables_prefix": None},
        [("/airflow/variables/hello", "fake-world", "String")], [("var", "hello", None)],
        no_call=True),
    "config_prefix_none_value": Case(
        "ssm", {"config_prefix": None},
        [("/airflow/config/config", "fake-config", "String")], [("config", "config", None)],
        no_call=True),
    **_pattern_cases("ssm"),
    "connection_prefix_with_no_leading_slash": Case(
        "ssm", {"connections_prefix": "airflow/connections"},
        [("/airflow/connections/test_mysql", PG, "String")], [("conn", "test_mysql", None)]),
    "variable_prefix_with_no_leading_slash": Case(
        "ssm", {"variables_prefix": "airflow/variables"},
        [("/airflow/variables/hello", "fake-world", "String")], [("var", "hello", None)]),
    "config_prefix_with_no_leading_slash": Case(
        "ssm", {"config_prefix": "airflow/config"},
        [("/airflow/config/config", "fake-config", "String")], [("config", "config", None)]),
    # ours: a trailing slash, an empty prefix (names at the root), a team's own config
    "prefix_with_trailing_slash": Case(
        "ssm", {"connections_prefix": "/airflow/connections/"},
        [("/airflow/connections/test_mysql", PG, "String")], [("conn", "test_mysql", None)]),
    "empty_prefix_with_team": Case(
        "ssm", {"variables_prefix": ""},
        [("/my_team--hello", "fake-team-world", "String"), ("/hello", "fake-world", "String")],
        [("var", "hello", "my_team"), ("var", "hello", None)]),
}

SM: dict[str, Case] = {
    "get_connection": Case("secrets_manager", {}, [("airflow/connections/fake_conn",
                                                    "scheme://user:fake-pass-0@host:100", "")],
                           [("connection", "fake_conn", None)]),
    "get_conn_value_full_url_mode": Case(
        "secrets_manager", {}, [("airflow/connections/test_postgres", PG, "")],
        [("conn", "test_postgres", None)]),
    "get_conn_value_non_existent_key": Case(
        "secrets_manager", {}, [("airflow/connections/test_postgres", PG, "")],
        [("conn", "test_mysql", None), ("connection", "test_mysql", None)]),
    "get_conn_value_with_team_name": Case(
        "secrets_manager", {}, [("airflow/connections/my_team--test_postgres", PG, "")],
        [("conn", "test_postgres", "my_team")]),
    "global_caller_cannot_access_team_scoped_connection": Case(
        "secrets_manager", {}, [("airflow/connections/my_team--test_postgres", PG, "")],
        [("conn", "my_team--test_postgres", None)], multi_team=True),
    "another_teams_secret_is_not_reachable": Case(
        "secrets_manager", {}, [("airflow/connections/my_team--test_postgres", PG, "")],
        [("conn", "my_team--test_postgres", "other_team")], multi_team=True),
    "team_whose_name_extends_the_callers_is_not_reachable": Case(
        "secrets_manager", {}, [("airflow/connections/my_team--prod--test_postgres", PG, "")],
        [("conn", "my_team--prod--test_postgres", "my_team")], multi_team=True),
    "team_scoped_lookup_cannot_reach_a_longer_teams_namespace": Case(
        "secrets_manager", {}, [("airflow/connections/my_team--prod--test_postgres", PG, "")],
        [("conn", "prod--test_postgres", "my_team")], multi_team=True),
    "refusing_an_ambiguous_id_is_logged": Case(
        "secrets_manager", {}, [("airflow/connections/prod--test_postgres", PG, "")],
        [("conn", "prod--test_postgres", None), ("var", "prod--hello", None)],
        multi_team=True, no_call=True, logged=["prod--test_postgres", "prod--hello"]),
    "team_caller_falls_back_to_global_connection": Case(
        "secrets_manager", {}, [("airflow/connections/test_postgres", PG, "")],
        [("conn", "test_postgres", "non_existent_team")]),
    "get_variable": Case("secrets_manager", {}, [("airflow/variables/hello", "fake-world", "")],
                         [("var", "hello", None)]),
    "get_variable_non_existent_key": Case(
        "secrets_manager", {}, [("airflow/variables/hello", "fake-world", "")],
        [("var", "test_mysql", None)]),
    "get_variable_with_team_name": Case(
        "secrets_manager", {}, [("airflow/variables/my_team--hello", "fake-world", "")],
        [("var", "hello", "my_team")]),
    "global_caller_cannot_access_team_scoped_variable": Case(
        "secrets_manager", {}, [("airflow/variables/my_team--hello", "fake-world", "")],
        [("var", "my_team--hello", None)], multi_team=True),
    "get_config_non_existent_key": Case(
        "secrets_manager", {}, [("airflow/config/hello", "fake-world", "")],
        [("config", "test", None)]),
    "connection_prefix_none_value": Case(
        "secrets_manager", {"connections_prefix": None},
        [("airflow/connections/test_mysql", PG, "")], [("conn", "test_mysql", None)],
        no_call=True),
    "variable_prefix_none_value": Case(
        "secrets_manager", {"variables_prefix": None},
        [("airflow/variables/hello", "fake-world", "")], [("var", "hello", None)],
        no_call=True),
    "config_prefix_none_value": Case(
        "secrets_manager", {"config_prefix": None},
        [("airflow/config/config", "fake-config", "")], [("config", "config", None)],
        no_call=True),
    **_pattern_cases("secrets_manager"),
    "passing_client_kwargs": Case(
        "secrets_manager", {"use_ssl": False, "role_arn": ROLE, "region_name": "eu-south-1"},
        [("airflow/variables/hello", "fake-world", "")], [("var", "hello", None)]),
    # earlier provider versions: connections stored as JSON fields, Airflow's alias words
    "json_connection": Case(
        "secrets_manager", {}, [("airflow/connections/test_postgres", JSON_CONN, "")],
        [("conn", "test_postgres", None), ("connection", "test_postgres", None)]),
    "json_connection_alias_words": Case(
        "secrets_manager", {}, [("airflow/connections/test_postgres", json.dumps(
            {"user": "airflow", "pass": "fake-pass-4", "host": "host", "port": 5432,
             "database": "airflow", "engine": "postgresql"}), "")],
        [("conn", "test_postgres", None), ("connection", "test_postgres", None)]),
    "json_connection_extra_conn_words": Case(
        "secrets_manager", {"extra_conn_words": {"user": ["usuario"]}},
        [("airflow/connections/test_postgres", json.dumps(
            {"usuario": "airflow", "pass": "fake-pass-5", "host": "host", "port": 5432,
             "schema": "airflow", "engine": "postgresql"}), "")],
        [("conn", "test_postgres", None), ("connection", "test_postgres", None)]),
    "json_connection_extra_as_string": Case(
        "secrets_manager", {}, [("airflow/connections/test_postgres", json.dumps(
            {"username": "airflow", "password": "fake-pass-6", "server": "host",
             "conn_type": "postgres", "extra": '{"sslmode": "require"}'}), "")],
        [("conn", "test_postgres", None), ("connection", "test_postgres", None)]),
    # ours: a separator, an empty prefix (the team-scoped name is not tried without one)
    "sep": Case(
        "secrets_manager", {"connections_prefix": "airflow-connections-", "sep": "-"},
        [("airflow-connections-test_postgres", PG, "")], [("conn", "test_postgres", None)]),
    "empty_prefix_with_team": Case(
        "secrets_manager", {"variables_prefix": ""},
        [("my_team--hello", "fake-team-world", ""), ("hello", "fake-world", "")],
        [("var", "hello", "my_team"), ("var", "hello", None)]),
    # documented differences (docs/airflow.md)
    "binary_secret": Case(
        "secrets_manager", {}, [("airflow/variables/blob", "fake-binary", "binary")],
        [("var", "blob", None)]),
    "name_outside_pipekeys_characters": Case(
        "secrets_manager", {}, [("airflow/variables/ops@example", "fake-at", "")],
        [("var", "ops@example", None)]),
    "prefix_with_a_leading_slash": Case(
        "secrets_manager", {"variables_prefix": "/airflow/variables"},
        [("/airflow/variables/hello", "fake-slash", "")], [("var", "hello", None)]),
}

#: case -> (Airflow's answers, pipekey's answers), per call; why: docs/airflow.md
DIFFERENCES: dict[str, tuple[list[Any], list[Any]]] = {
    # Airflow returns None for a binary secret (and asks its next backend, the metastore);
    # pipekey returns the value base64-encoded, as everywhere in pipekey
    "secrets_manager:binary_secret": ([None], ["ZmFrZS1iaW5hcnk="]),
    # a name pipekey cannot key ('@', '+', '=' in Secrets Manager names): pipekey answers None
    "secrets_manager:name_outside_pipekeys_characters": (["fake-at"], [None]),
    # a Secrets Manager name starting with '/': the same (a key does not start with '/')
    "secrets_manager:prefix_with_a_leading_slash": (["fake-slash"], [None]),
}

CASES = {f"ssm:{k}": v for k, v in SSM.items()} | {f"secrets_manager:{k}": v
                                                    for k, v in SM.items()}


@pytest.fixture
def region(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AIRFLOW__SECRETS__BACKEND", "AIRFLOW__WORKERS__SECRETS_BACKEND",
                 "PIPEKEY_CONFIG", "PIPEKEY_AIRFLOW_MODE"):
        monkeypatch.delenv(name, raising=False)
    return REGION


@pytest.fixture
def compat(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The compat module with its per-process Pipekeys reset (and closed) around a case."""
    from pipekey.integrations import airflow_compat

    monkeypatch.setattr(airflow_compat, "_lks", {})
    yield airflow_compat
    for lk in airflow_compat._lks.values():
        lk.close()


def _store(case: Case, region: str) -> Iterator[None]:
    import boto3

    where = case.kwargs.get("region_name", region)
    if case.backend == "ssm":
        client = boto3.client("ssm", region_name=where)
        for name, value, kind in case.data:
            client.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)
        try:
            yield
        finally:
            client.delete_parameters(Names=[n for n, _, _ in case.data])
        return
    client = boto3.client("secretsmanager", region_name=where)
    for name, value, kind in case.data:
        if kind == "binary":
            client.create_secret(Name=name, SecretBinary=value.encode())
        else:
            client.create_secret(Name=name, SecretString=value)
    try:
        yield
    finally:
        for name, _, _ in case.data:
            client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def _airflow_backend(case: Case) -> Any:
    if case.backend == "ssm":
        from airflow.providers.amazon.aws.secrets.systems_manager import (
            SystemsManagerParameterStoreBackend,
        )

        return SystemsManagerParameterStoreBackend(**case.kwargs)
    from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend

    return SecretsManagerBackend(**case.kwargs)


def _ask(backend: Any, getter: str, secret_id: str, team: str | None) -> Any:
    if getter == "conn":
        return backend.get_conn_value(secret_id, team_name=team)
    if getter == "var":
        return backend.get_variable(secret_id, team_name=team)
    if getter == "config":
        return backend.get_config(secret_id)
    conn = backend.get_connection(secret_id, team_name=team)
    return None if conn is None else (conn.conn_type, conn.login, conn.password, conn.host,
                                      conn.port, conn.schema, conn.extra_dejson)


def _answers(backend: Any, case: Case, moto: Any) -> tuple[list[Any], int]:
    before = sum(moto.counts.values())
    answers = [_ask(backend, *call) for call in case.calls]
    return answers, sum(moto.counts.values()) - before


@pytest.mark.parametrize("name", list(CASES))
def test_same_answer_as_airflows_backend(name: str, region: str, compat: Any, moto: Any,
                                         monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    from pipekey.integrations.airflow import PipekeySecretsBackend

    case = CASES[name]
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", str(case.multi_team))
    caplog.set_level(logging.WARNING)
    store = _store(case, region)
    next(store)
    try:
        theirs, their_calls = _answers(_airflow_backend(case), case, moto)
        ours_backend = PipekeySecretsBackend(compat=case.backend, **case.kwargs)
        assert ours_backend.compat is not None and ours_backend.compat.kind == case.backend
        ours, our_calls = _answers(ours_backend, case, moto)
    finally:
        next(store, None)
    if name in DIFFERENCES:
        assert (theirs, ours) == DIFFERENCES[name]
    else:
        assert ours == theirs
    # never more store calls than Airflow (the team-scoped and plain names in one call)
    assert our_calls <= their_calls + (1 if case.kwargs.get("role_arn") else 0)
    if case.no_call:
        assert their_calls == 0 and our_calls == 0
    for refused in case.logged:
        pipekey_logs = [r for r in caplog.records if r.name == "pipekey"
                        and refused in r.getMessage()]
        assert len(pipekey_logs) == 1 and pipekey_logs[0].levelno == logging.WARNING


def test_case_counts() -> None:
    """The tally the docs quote: every case answers as Airflow's backend or differs as
    documented."""
    same = len(CASES) - len(DIFFERENCES)
    print(f"\nconformance cases: {len(CASES)} (ssm {len(SSM)}, secrets_manager {len(SM)}); "
          f"same answer: {same}; documented differences: {len(DIFFERENCES)}")
    assert set(DIFFERENCES) <= set(CASES)


# -- what the drop-in adds, and its kwargs ---------------------------------------------------
def test_a_changed_value_within_the_cache_ttl(region: str, compat: Any) -> None:
    """Documented difference: Airflow's backend reads the store every time; the drop-in
    serves a cached value until its TTL, and reads every time with "cache": false."""
    import boto3
    from airflow.providers.amazon.aws.secrets.systems_manager import (
        SystemsManagerParameterStoreBackend,
    )

    from pipekey.integrations.airflow import PipekeySecretsBackend

    ssm = boto3.client("ssm", region_name=REGION)
    name = "/airflow/variables/rotated"
    ssm.put_parameter(Name=name, Value="fake-before", Type="SecureString", Overwrite=True)
    try:
        theirs = SystemsManagerParameterStoreBackend()
        cached = PipekeySecretsBackend(compat="ssm")
        uncached = PipekeySecretsBackend(compat="ssm", cache=False)
        assert {b.get_variable("rotated") for b in (theirs, cached, uncached)} == {"fake-before"}
        ssm.put_parameter(Name=name, Value="fake-after", Type="SecureString", Overwrite=True)
        assert theirs.get_variable("rotated") == "fake-after"
        assert uncached.get_variable("rotated") == "fake-after"
        assert cached.get_variable("rotated") == "fake-before"
    finally:
        ssm.delete_parameter(Name=name)


def test_airflow_builds_it_from_its_ssm_kwargs_verbatim(region: str, compat: Any, moto: Any,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Any) -> None:
    """Airflow's own [secrets] loading, the SSM backend's kwargs unchanged (recognised by
    SSM's leading '/'), no manifest: the team-scoped and the plain name in one GetParameters,
    the second read from the cache, the value masked and audited (never written)."""
    import boto3
    from airflow.configuration import initialize_secrets_backends

    from pipekey import redact
    from pipekey.audit import read_events

    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/airflow/variables/team_a--token", Value="fake-dropin-token",
                      Type="SecureString", Overwrite=True)
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND",
                       "pipekey.integrations.airflow.PipekeySecretsBackend")
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps(
        {"connections_prefix": "/airflow/connections", "variables_prefix": "/airflow/variables",
         "profile_name": None, "use_ssl": False,
         "audit": {"sinks": [{"type": "file", "path": str(audit)}]}}))
    try:
        backend = initialize_secrets_backends()[0]
        assert type(backend).__name__ == "PipekeySecretsBackend"
        assert backend.compat.kind == "ssm"
        moto.reset()
        assert backend.get_variable("token", team_name="team_a") == "fake-dropin-token"
        assert backend.get_variable("token", team_name="team_a") == "fake-dropin-token"
        assert backend.get_variable("token", team_name="team_b") is None
    finally:
        ssm.delete_parameter(Name="/airflow/variables/team_a--token")
    assert moto.counts["GetParameters"] == 2  # team_a's one batch; team_b's one (not cached)
    assert moto.counts["GetParameter"] == 0
    assert "fake-dropin-token" not in redact.redactor().redact("x fake-dropin-token x")
    events = read_events(audit)
    assert {(e["key"], e["outcome"]) for e in events} >= {
        ("airflow/variables/team_a--token", "ok"), ("airflow/variables/team_b--token", "absent")}
    assert "fake-dropin-token" not in audit.read_text()


@pytest.mark.parametrize(("kwargs", "kind"), [
    ({"connections_prefix": "/airflow/connections"}, "ssm"),
    ({"sep": "/", "region_name": "eu-west-1"}, "secrets_manager"),
    ({"extra_conn_words": {"user": ["usuario"]}}, "secrets_manager"),
    ({"compat": "secrets_manager", "connections_prefix": "/x"}, "secrets_manager"),
    ({"compat": "ssm"}, "ssm"),
    ({"connections_prefix": "airflow/connections"}, None),
])
def test_which_backend_the_kwargs_are_for(kwargs: dict, kind: str | None, compat: Any) -> None:
    from pipekey.integrations.airflow_compat import compat_kind

    compat_name = kwargs.pop("compat", None)
    given = {k: v for k, v in kwargs.items() if k.endswith("_prefix")}
    rest = {k: v for k, v in kwargs.items() if k not in given}
    assert compat_kind(compat_name, given, rest) == kind


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"region_name": "eu-west-1"}, "add \"compat\""),
    ({"compat": "ssm", "no_such_kwarg": 1}, "unknown backend_kwargs ['no_such_kwarg']"),
    ({"compat": "vault"}, "compat is one of"),
    ({"compat": "ssm", "aws_secret_access_key": "fake-static-key"}, "takes no AWS keys"),
    ({"compat": "ssm", "assume_role_method": "assume_role_with_saml"}, "sts:AssumeRole only"),
    ({"compat": "ssm", "assume_role_kwargs": {"Policy": "{}"}}, "assume_role_kwargs ['Policy']"),
    ({"compat": "secrets_manager", "extra_conn_words": {"nope": ["x"]}}, "'nope'"),
    ({"compat": "ssm", "mode": "broker"}, "mode 'direct'"),
    ({"compat": "ssm", "mode": "observe"}, 'has no audit sink: add "audit": {"sinks"'),
])
def test_bad_kwargs_are_one_line_errors(kwargs: dict, message: str, compat: Any) -> None:
    from pipekey.errors import UsageError
    from pipekey.integrations.airflow import PipekeySecretsBackend

    with pytest.raises(UsageError) as info:
        PipekeySecretsBackend(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "fake-static-key" not in str(info.value)


# -- the docs' snippets ------------------------------------------------------------------------
def _blocks(doc: str, lang: str) -> list[str]:
    """The fenced ``lang`` blocks of docs/<doc> (indented ones, in lists, too)."""
    import re
    import textwrap
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / doc).read_text()
    return [textwrap.dedent(m.group(2)) for m in re.finditer(
        rf"^( *)```{lang}\n(.*?)^\1```$", text, re.S | re.M)]


def _kwargs_from_docs() -> list[dict[str, Any]]:
    """Every backend_kwargs of docs/mwaa.md's options and docs/airflow.md's [secrets] block."""
    import configparser

    out = []
    for block in _blocks("mwaa.md", "json"):
        options = json.loads(block)
        if "secrets.backend_kwargs" in options:
            out.append({"backend": options["secrets.backend"],
                        **json.loads(options["secrets.backend_kwargs"])})
    for block in _blocks("airflow.md", "ini"):
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(block)
        if parser.has_option("secrets", "backend_kwargs"):
            out.append({"backend": parser.get("secrets", "backend"),
                        **json.loads(parser.get("secrets", "backend_kwargs"))})
    return out


def test_docs_kwargs_build_the_backend(region: str, compat: Any, tmp_path: Any) -> None:
    """Each documented backend_kwargs builds its class (Airflow's with Airflow's kwargs,
    pipekey's with the same plus compat); a manifest path stands for a real manifest."""
    import importlib

    documented = _kwargs_from_docs()
    assert len(documented) >= 6
    manifest = tmp_path / "pipekey.toml"
    manifest.write_text('[backends.ssm]\ntype = "aws_ssm"\nprefix = "/"\n')
    built, modes = set(), set()
    for kwargs in documented:
        module, _, name = kwargs.pop("backend").rpartition(".")
        if "manifest" in kwargs:
            kwargs["manifest"] = str(manifest)
        if "audit" in kwargs:
            kwargs["audit"]["sinks"][0]["path"] = str(tmp_path / "audit.jsonl")
        backend = getattr(importlib.import_module(module), name)(**kwargs)
        built.add(type(backend).__name__)
        if name == "PipekeySecretsBackend" and "compat" in kwargs:
            assert backend.compat.kind == kwargs["compat"]
            assert backend.mode == kwargs.get("mode", "direct")
            assert (backend.compat.observer is not None) == (backend.mode == "observe")
            modes.add(backend.mode)
    assert built == {"PipekeySecretsBackend", "SystemsManagerParameterStoreBackend"}
    assert modes == {"direct", "observe"}  # the switch and the observe step


def test_docs_iam_policies_parse() -> None:
    policies = [json.loads(b) for b in _blocks("mwaa.md", "json") if '"Statement"' in b]
    assert len(policies) == 3
    actions = set()
    for policy in policies:
        assert policy["Version"] == "2012-10-17"
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow" and statement["Resource"]
            actions |= set(statement["Action"])
    assert {"ssm:GetParameters", "ssm:GetParametersByPath", "secretsmanager:BatchGetSecretValue",
            "sts:AssumeRole", "ssm:GetParameter"} <= actions


def test_docs_install_and_startup_script() -> None:
    import subprocess

    (requirements,) = _blocks("mwaa.md", "text")
    assert requirements.startswith('--constraint "https://raw.githubusercontent.com/apache/'
                                   'airflow/constraints-')
    assert "pipekey[airflow,aws]" in requirements.splitlines()
    (script,) = _blocks("mwaa.md", "bash")
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    assert "PROVIDERS__ENABLE_AIRFLOW_SECRETS=false" in script


def test_in_a_pipekey_run_a_mapped_connection_comes_from_the_run(
        region: str, compat: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a manifest and a run open (task_run), the drop-in serves a connection the run
    maps from the run's batch; everything else as Airflow's backend would."""
    import pipekey
    from pipekey.backends.local import LocalBackend, generate_master_key
    from pipekey.integrations.airflow import PipekeySecretsBackend

    key = generate_master_key()
    monkeypatch.setenv("PIPEKEY_MASTER_KEY", key)
    store = LocalBackend("local", tmp_path / "dev.db", master_key=key)
    store.put("connections/warehouse", "postgres://u:fake-run-pw@wh/dev")
    store.close()
    manifest = tmp_path / "pipekey.toml"
    manifest.write_text('[backends.local]\ntype = "local"\npath = "dev.db"\n'
                        '[pipelines.ads]\ndags = ["ads*"]\nscope = "marketing/ads"\n'
                        '[pipelines.ads.connections]\nwarehouse = "connections/warehouse"\n')
    backend = PipekeySecretsBackend(compat="ssm", manifest=str(manifest))
    assert backend.get_conn_value("warehouse") is None  # not in SSM, no run open
    with pipekey.load(manifest).pipeline("ads"):
        assert backend.get_conn_value("warehouse") == "postgres://u:fake-run-pw@wh/dev"


# -- observe, then enforce, from the drop-in ----------------------------------------------------
OBSERVED = {"/airflow/connections/ads_db": "postgres://ads:fake-ads-pw@ads/db",
            "/airflow/variables/accounts/acct_1/api_token": "fake-token-1",
            "/airflow/variables/accounts/acct_2/api_token": "fake-token-2",
            "/airflow/connections/ledger": "postgres://fin:fake-ledger-pw@fin/db",
            "/airflow/variables/ops_secret": "fake-ops-secret"}


def _task(monkeypatch: pytest.MonkeyPatch, dag_id: str | None, **params: str) -> None:
    from types import SimpleNamespace

    context = None if dag_id is None else {
        "dag": SimpleNamespace(dag_id=dag_id), "run_id": "manual__1", "params": params,
        "ti": SimpleNamespace(task_id="load", map_index=0)}
    monkeypatch.setattr("pipekey.integrations._airflow_tasks.task_context", lambda: context)


def test_observe_propose_replay_enforce_from_the_ssm_dropin(
        region: str, compat: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/mwaa.md's four steps on moto: the SSM drop-in in observe mode answers several
    DAGs exactly as the drop-in does and records each read; `pipekey propose` drafts
    pipelines; with the SSM backend (prefix "/") the draft replays clean; enforcing it serves
    the DAGs' reads and refuses a read outside it."""
    import boto3
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    from pipekey.audit import read_events
    from pipekey.integrations import _airflow_tasks
    from pipekey.integrations.airflow import PipekeySecretsBackend

    from ..conftest import run_cli

    monkeypatch.setattr(_airflow_tasks, "_instances", {})
    monkeypatch.setattr(_airflow_tasks, "process_default", {})
    monkeypatch.chdir(tmp_path)
    ssm = boto3.client("ssm", region_name=REGION)
    for name, value in OBSERVED.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    audit = tmp_path / "audit.jsonl"
    kwargs = {"compat": "ssm", "connections_prefix": "/airflow/connections",
              "variables_prefix": "/airflow/variables"}
    try:
        dropin = PipekeySecretsBackend(**kwargs, cache=False)
        observing = PipekeySecretsBackend(**kwargs, mode="observe", audit={
            "sinks": [{"type": "file", "path": str(audit)}]})
        reads = [("ads_report", {"account": "acct_1"}, "var", "accounts/acct_1/api_token"),
                 ("ads_report", {"account": "acct_1"}, "conn", "ads_db"),
                 ("ads_backfill", {"account": "acct_2"}, "var", "accounts/acct_2/api_token"),
                 ("ads_backfill", {"account": "acct_2"}, "conn", "ads_db"),
                 ("finance_daily", {}, "conn", "ledger"),
                 ("finance_daily", {}, "var", "not_there")]
        for dag, params, getter, name in reads:
            _task(monkeypatch, dag, **params)
            ask = "get_variable" if getter == "var" else "get_conn_value"
            answer = getattr(observing, ask)(name)
            assert answer == getattr(dropin, ask)(name)  # exactly the drop-in's answer
            assert (answer is None) == (name == "not_there")
        events = [e for e in read_events(audit) if e["event"] == "observe"]
        assert [(e["dag"], e["lookup"], e["key"], e["outcome"], e["enforce"], e["pipeline"])
                for e in events] == [
            (dag, f"{'variable' if g == 'var' else 'connection'}:{name}",
             f"airflow/{'variables' if g == 'var' else 'connections'}/{name}",
             "absent" if name == "not_there" else "ok",
             "allow" if name == "not_there" else "refuse", None)
            for dag, _, g, name in reads]
        assert events[0]["params"] == {"account": "acct_1"}
        assert "matches no pipeline" in events[0]["detail"]
        assert not [e for e in read_events(audit) if e["event"] == "read"]  # one event a read
        assert "fake-" not in audit.read_text()

        proposed = run_cli("propose", "--file", str(audit), cwd=tmp_path)
        assert proposed.returncode == 0, proposed.stderr
        draft = tomllib.loads(proposed.stdout)["pipelines"]
        assert draft["ads"]["dags"] == ["ads_*"]
        assert draft["ads"]["scope"] == "airflow/variables/accounts/{account}"
        assert draft["ads"]["grants"] == ["airflow/connections/ads_db"]
        assert draft["finance"]["grants"] == ["airflow/connections/ledger"]
        (header,) = _blocks("mwaa.md", "toml")  # the review step's manifest, as documented
        assert 'prefix = "/"' in header and "\n[pipelines" not in header
        manifest = tmp_path / "pipekey.toml"
        manifest.write_text(header.replace('"eu-west-1"', f'"{REGION}"').replace(
            "/usr/local/airflow/logs/pipekey-audit.jsonl", str(audit)) + proposed.stdout)
        replayed = run_cli("--config", str(manifest), "check", "--replay", cwd=tmp_path)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "refused" not in replayed.stdout and "0 would be refused" in replayed.stderr
        assert "5 observed reads replayed" in replayed.stderr

        # observing on under the reviewed manifest: its decisions are recorded
        observed_under = PipekeySecretsBackend(**kwargs, mode="observe", manifest=str(manifest),
                                               audit={"sinks": [{"type": "file",
                                                                 "path": str(audit)}]})
        _task(monkeypatch, "ads_report", account="acct_1")
        assert observed_under.get_variable("accounts/acct_1/api_token") == "fake-token-1"
        assert observed_under.get_variable("ops_secret") == "fake-ops-secret"
        last = [e for e in read_events(audit) if e["event"] == "observe"][-2:]
        assert [(e["key"], e["pipeline"], e["enforce"]) for e in last] == [
            ("airflow/variables/accounts/acct_1/api_token", "ads", "allow"),
            ("airflow/variables/ops_secret", "ads", "refuse")]
        assert "add 'airflow/variables/ops_secret' to pipelines.ads.grants" in last[1]["detail"]

        enforcing = PipekeySecretsBackend(manifest=str(manifest))
        for dag, params, getter, name in reads:
            _task(monkeypatch, dag, **params)
            ask = "get_variable" if getter == "var" else "get_conn_value"
            assert getattr(enforcing, ask)(name) == getattr(dropin, ask)(name)
        _task(monkeypatch, "ads_report", account="acct_1")
        for refused in (lambda: enforcing.get_variable("ops_secret"),
                        lambda: enforcing.get_variable("accounts/acct_2/api_token"),
                        lambda: enforcing.get_conn_value("ledger")):
            with pytest.raises(AirflowSecretsBackendAccessDenied, match="may not read"):
                refused()
        assert "fake-" not in proposed.stdout + proposed.stderr + replayed.stdout
    finally:
        ssm.delete_parameters(Names=list(OBSERVED))
