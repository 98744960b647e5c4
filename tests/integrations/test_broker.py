"""Broker mode without Airflow: the wire protocol (pipekey.broker), the per-team policy and
run requests (pipekey.teams), and a brokered run end to end in one process (issue 17)."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipekey import redact
from pipekey._compat import tomllib
from pipekey.broker import (
    PREFIX,
    BrokeredSource,
    brokered_run,
    decode_payload,
    encode_payload,
    is_request,
    parse_request,
    request_key,
)
from pipekey.client import Pipekey
from pipekey.errors import AccessDenied, ManifestError, SecretNotFound, UsageError
from pipekey.manifest import parse_manifest
from pipekey.teams import TeamBroker, TeamPolicy
from pipekey.testing import MemoryBackend

MANIFEST = """
env = "prod"
[backends.memory]
type = "env"
[pipelines.ads]
scope = "marketing/ads/{account}"
requires = ["access_token"]
optional = ["app_secret"]
shared = ["slack"]
grants = ["marketing/reports"]
connections = { warehouse = "connections/wh_{env}", lake = "connections/lake_{account}" }
dags = ["ads*"]
teams = ["marketing"]
dlt = { "sources.ads.extra" = "key:marketing/reports/{account}" }
[pipelines.crm]
scope = "marketing/crm"
requires = ["api_key"]
teams = ["marketing"]
[pipelines.ledger]
scope = "finance/{env}/ledger"
requires = ["api_key"]
connections = { warehouse = "connections/fin_wh" }
teams = ["finance"]
[pipelines.orphan]
scope = "ops"
"""

STORE = {
    "marketing/ads/acct_42/access_token": "fake-token-acct42",
    "marketing/ads/acct_43/access_token": "fake-token-acct43",
    "marketing/ads/app_secret": "fake-app-secret-parent",
    "marketing/other_name": "fake-undeclared-parent",
    "marketing/reports/acct_42": "fake-report-acct42",
    "marketing/crm/api_key": "fake-crm-key",
    "shared/slack": "fake-slack-hook",
    "connections/wh_prod": "postgres://u:fake-wh-pw@wh:5432/db",
    "connections/lake_acct_42": "postgres://u:fake-lake42-pw@lake/db",
    "connections/fin_wh": "postgres://f:fake-fin-wh-pw@fin/db",
    "finance/prod/ledger/api_key": "fake-ledger-key",
    "airflow/variables/finance_only": "fake-fin-variable",
    "ops/token": "fake-ops-token",
}
MARKETING_ONLY = {k: v for k, v in STORE.items()
                  if k.startswith(("marketing/", "connections/wh", "connections/lake"))}
FINANCE_ONLY = {k: v for k, v in STORE.items() if "fin" in k or k.startswith("ops/")}


def _world(tmp_path: Path, store: dict[str, str] | None = None,
           **broker_kwargs: str) -> tuple[TeamBroker, MemoryBackend]:
    manifest = parse_manifest(tomllib.loads(MANIFEST), tmp_path / "pipekey.toml")
    memory = MemoryBackend("memory", data=store if store is not None else STORE)
    lk = Pipekey([memory], env="prod", manifest=manifest)
    return TeamBroker(lk, **broker_kwargs), memory


def _fetch(team_broker: TeamBroker, team: str):
    return lambda key: team_broker.run(key, team)


# -- the request key ----------------------------------------------------------------------
URL_SAFE = re.compile(r"pipekey\.run\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
segments = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True).filter(
    lambda s: s not in (".", ".."))


@settings(max_examples=150, deadline=None)
@given(pipeline=st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True),
       env=st.one_of(st.none(), segments),
       params=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), segments,
                              max_size=4),
       run_name=st.one_of(st.none(), st.text(max_size=80)))
def test_request_key_round_trips_and_is_url_safe(pipeline, env, params, run_name) -> None:
    """Any pipeline, environment, parameters and run name (slashes, '?', '#', '%', spaces,
    quotes, non-ASCII) round-trip through a key made only of URL-path-safe characters, which
    the Task SDK puts into the Execution API's URL unquoted."""
    key = request_key(pipeline, env, params, run_name)
    assert URL_SAFE.fullmatch(key), key
    assert is_request(key)
    request = parse_request(key)
    assert (request.pipeline, request.env, dict(request.params), request.run_name) == \
        (pipeline, env, params, run_name)


@pytest.mark.parametrize("key", [
    pytest.param(PREFIX + "ads", id="no-body"),
    pytest.param(PREFIX + "ads.!!!", id="bad-alphabet"),
    pytest.param(PREFIX + "ads.e30", id="empty-object"),
    pytest.param(PREFIX + "a/b.e30", id="slash-pipeline"),
    pytest.param(PREFIX + "ads." + "eyJlbnYiOiIuLiIsInBhcmFtcyI6e30sInYiOjF9", id="env-dotdot"),
])
def test_malformed_requests_are_refused(key: str) -> None:
    """A key in the reserved namespace that is no well-formed request is one UsageError."""
    with pytest.raises(UsageError) as info:
        parse_request(key)
    assert "\n" not in str(info.value)


def test_reserved_prefix_detection() -> None:
    """Only keys starting with the reserved prefix are run requests."""
    assert is_request(request_key("ads", params={"account": "acct_42"}))
    assert not is_request("pipekey_run.ads")
    assert not is_request("marketing/pipekey.run.x")
    with pytest.raises(UsageError, match="parameter 'account'"):
        request_key("ads", params={"account": "acct/42"})


# -- the payload --------------------------------------------------------------------------
odd_values = st.text(st.one_of(st.characters(blacklist_categories=("Cs",)),
                               st.sampled_from('"\\\n\'{}/%?#')),
                     min_size=4, max_size=40).map(lambda v: f"fake-{v}-x")


@settings(max_examples=60, deadline=None)
@given(token=odd_values, secret=odd_values)
def test_payload_round_trip_registers_every_value(tmp_path_factory, token, secret) -> None:
    """Values with quotes, backslashes, newlines and non-ASCII survive the round trip, and
    decoding registers each with the masker before it returns."""
    tmp = tmp_path_factory.mktemp("payload")
    store = {**STORE, "marketing/ads/acct_42/access_token": token,
             "marketing/ads/app_secret": secret}
    team_broker, _ = _world(tmp, store)
    with team_broker.pipekey("marketing").pipeline("ads", account="acct_42") as run:
        text = encode_payload(run)
    payload = decode_payload(text)
    assert payload.names["access_token"].value == token
    assert payload.names["app_secret"].value == secret
    assert payload.connections["warehouse"].value == STORE["connections/wh_prod"]
    for value in (token, secret, text):
        assert value not in redact.redactor().redact(f"leak: {value} :end")
    assert token not in repr(payload) and secret not in repr(payload)


def test_decode_refuses_garbage_without_quoting_it() -> None:
    """Not a payload: one line, and none of the text in it."""
    for text in ("fake-not-json-secret", json.dumps({"v": 1, "names": "fake-zzz-secret"}),
                 json.dumps({"v": 99})):
        with pytest.raises(UsageError) as info:
            decode_payload(text)
        assert "fake-" not in str(info.value) and "\n" not in str(info.value)


# -- the per-team policy ------------------------------------------------------------------
def test_team_reads_its_own_and_shared(tmp_path: Path) -> None:
    """Team marketing reads any account's scope, declared names at parent levels, grants,
    mapped connections and shared/; templated scopes allow every parameter value."""
    team_broker, _ = _world(tmp_path)
    for key in ("marketing/ads/acct_42/access_token", "marketing/ads/acct_43/access_token",
                "marketing/ads/app_secret", "marketing/reports/acct_42",
                "marketing/crm/api_key", "shared/slack", "connections/wh_prod",
                "connections/lake_acct_42"):
        assert team_broker.read(key, "marketing", "key") == STORE[key], key
    assert team_broker.connection_key("warehouse", "marketing", None) == "connections/wh_prod"
    assert team_broker.connection_key("warehouse", "finance", None) == "connections/fin_wh"
    with pytest.raises(AccessDenied, match="'lake' of pipeline 'ads' depends on the scope"):
        team_broker.connection_key("lake", "marketing", None)


def test_other_team_gets_nothing_of_marketing(tmp_path: Path, caplog) -> None:
    """Every marketing key is refused (held) to team finance by key, by connection and by run
    request; the refusals name the team and the key and hold no value; an absent key is
    None so Airflow's other backends may answer."""
    caplog.set_level(logging.DEBUG)
    team_broker, _ = _world(tmp_path)
    seen = []
    for key in MARKETING_ONLY:
        with pytest.raises(AccessDenied) as info:
            team_broker.read(key, "finance", f"variable {key!r}")
        seen.append(str(info.value))
        assert "'finance'" in str(info.value) and key in str(info.value)
    for pipeline, params in (("ads", {"account": "acct_42"}), ("crm", {})):
        with pytest.raises(AccessDenied, match=f"'finance' may not open pipekey pipeline "
                                               f"'{pipeline}'") as info:
            team_broker.run(request_key(pipeline, None, params), "finance")
        seen.append(str(info.value))
    assert team_broker.read("marketing/never/stored", "finance", "key") is None
    with pytest.raises(AccessDenied):  # and the other way round
        team_broker.read("finance/prod/ledger/api_key", "marketing", "key")
    text = "\n".join(seen) + caplog.text
    for value in STORE.values():
        assert value not in text


def test_unknown_team_and_no_team(tmp_path: Path) -> None:
    """A team no pipeline serves is refused by name; no team reads shared/ only, or nothing
    with no_team='deny'; a run is never served without a team."""
    team_broker, _ = _world(tmp_path)
    with pytest.raises(AccessDenied, match="team 'nobody' is served by no pipekey pipeline"):
        team_broker.read("shared/slack", "nobody", "key")
    with pytest.raises(AccessDenied, match="'nobody'"):
        team_broker.run(request_key("ads", None, {"account": "acct_42"}), "nobody")
    assert team_broker.read("shared/slack", None, "key") == STORE["shared/slack"]
    with pytest.raises(AccessDenied, match="without an Airflow team"):
        team_broker.read("marketing/crm/api_key", None, "key")
    with pytest.raises(AccessDenied, match="only to a task of an Airflow team"):
        team_broker.run(request_key("crm"), None)
    denying, _ = _world(tmp_path, no_team="deny")
    with pytest.raises(AccessDenied, match="serves nothing"):
        denying.read("shared/slack", None, "key")
    with pytest.raises(UsageError):
        _world(tmp_path, no_team="allow")


def test_parent_levels_serve_declared_names_only(tmp_path: Path) -> None:
    """At a parent level of a scope only the pipeline's declared names are readable."""
    team_broker, _ = _world(tmp_path)
    policy = team_broker.policy("marketing")
    assert isinstance(policy, TeamPolicy)
    assert policy.allows("marketing/ads/app_secret")
    assert policy.allows("marketing/api_key") and policy.allows("marketing/access_token")
    assert not policy.allows("marketing/other_name")
    assert not policy.allows("marketing/app_secret/x")
    assert not policy.allows("marketing/ads")
    assert not policy.allows("marketing")
    # a templated segment stands for every value: another account is the team's too
    assert policy.allows("marketing/ads/any_account/deep/below")
    assert policy.allows("marketing/ads/other_name")
    with pytest.raises(AccessDenied):
        team_broker.read("marketing/other_name", "marketing", "key")


def test_document_standing_for_a_subtree_is_refused(tmp_path: Path) -> None:
    """A declared name at a parent level that is a document of a subtree is refused."""
    from dataclasses import replace

    team_broker, memory = _world(tmp_path)
    original = memory._get_many

    def documents(keys):
        found = original(keys)
        return {k: replace(s, document=k == "marketing/ads/app_secret") for k, s in found.items()}

    memory._get_many = documents  # type: ignore[method-assign]
    with pytest.raises(AccessDenied, match="document"):
        team_broker.read("marketing/ads/app_secret", "marketing", "key")
    assert team_broker.read("marketing/ads/acct_42/access_token", "marketing", "k")


# -- a brokered run, end to end in one process ---------------------------------------------
def test_brokered_run_behaves_like_a_direct_run(tmp_path: Path, capsys) -> None:
    """The worker reads the manifest, builds no backend, and its run answers secret, get,
    connection, env, names and explain from the held values; refresh asks the broker again."""
    team_broker, memory = _world(tmp_path)
    manifest = team_broker.lk.manifest
    asked = []

    def fetch(key: str) -> str | None:
        asked.append(key)
        return team_broker.run(key, "marketing")

    with brokered_run(manifest, "ads", fetch, params={"account": "acct_42"},
                      run_name="ads__manual__1__load") as run:
        assert len(asked) == 1
        assert isinstance(list(run._chain)[0], BrokeredSource)
        assert run.secret("access_token") == "fake-token-acct42"
        assert run.secret("app_secret") == "fake-app-secret-parent"
        assert run.get("shared/slack") == "fake-slack-hook"
        assert run.get("marketing/reports/acct_42") == "fake-report-acct42"
        assert run.connection("warehouse").password == "fake-wh-pw"
        assert run.connection("lake").password == "fake-lake42-pw"
        assert run.names == ["access_token", "app_secret", "slack"]
        assert run.environment == "prod" and run.name == "ads__manual__1__load"
        assert run.env()["ACCESS_TOKEN"] == "fake-token-acct42"
        assert "marketing/ads/acct_42/access_token" in run.explain("access_token").summary()
        with pytest.raises(AccessDenied):
            run.get("marketing/ads/acct_43/access_token")
        with pytest.raises(SecretNotFound):
            run.get("marketing/ads/acct_42/never_sent")
        memory.put("marketing/ads/acct_42/access_token", "fake-token-acct42-rotated")
        assert run.refresh("access_token") == "fake-token-acct42-rotated"
        assert len(asked) == 2
        print("token", run.secret("access_token"), repr(run), list(run._chain))
    source = list(run._chain)[0]
    assert source.get_many(["marketing/ads/acct_42/access_token"]) == {}  # wiped on exit
    out = capsys.readouterr().out
    assert "fake-" not in redact.redactor().redact(out)
    with pytest.raises(UsageError, match="gave no run of pipeline 'ads'"):
        brokered_run(manifest, "ads", lambda key: None, params={"account": "acct_42"})
    long_name = "d" * 250 + "__" + "r" * 250 + "__" + "t" * 250  # Airflow's longest ids
    with brokered_run(manifest, "ads", fetch, params={"account": "acct_42"},
                      run_name=long_name) as run:
        assert run.name == long_name  # the request carries a shortened label
    with pytest.raises(AccessDenied, match="'finance' may not open"):
        brokered_run(manifest, "ads", _fetch(team_broker, "finance"),
                     params={"account": "acct_42"})


# -- one AWS principal per team -----------------------------------------------------------
ROLE_MANIFEST = """
env = "prod"
chain = ["ssm"]
[backends.ssm]
type = "aws_ssm"
prefix = "/lk-teams/{env}"
region = "eu-central-1"
[pipelines.ads]
scope = "marketing/ads/{account}"
requires = ["api_token"]
teams = ["marketing"]
[pipelines.ledger]
scope = "finance/ledger"
requires = ["api_token"]
teams = ["finance"]
[teams.marketing]
aws_role = { arn = "arn:aws:iam::123456789012:role/marketing-read" }
[teams.finance]
aws_role = { arn = "arn:aws:iam::123456789012:role/finance-read", session_name = "fin-reads" }
"""


def _assumed_keys() -> dict[str, str]:
    """RoleSessionName -> the access key id moto issued for it (moto runs in this process)."""
    from moto.sts.models import sts_backends

    return {role.session_name: role.access_key_id
            for regions in sts_backends.values() for backend in regions.values()
            for role in backend.assumed_roles}


def test_each_team_reads_as_its_own_role(tmp_path: Path, aws_env: str, moto) -> None:
    """The API server assumes a team's read role (session name pipekey-team-NAME unless the
    table names one) once, and signs that team's SSM reads with the assumed-role keys, as the
    server sees them; the session is reused for later lookups and runs of the team."""
    import boto3

    from pipekey.client import from_manifest

    boto3.client("ssm", region_name="eu-central-1").put_parameter(
        Name="/lk-teams/prod/marketing/ads/acct_42/api_token", Value="fake-token-acct42",
        Type="SecureString", Overwrite=True)
    boto3.client("ssm", region_name="eu-central-1").put_parameter(
        Name="/lk-teams/prod/finance/ledger/api_token", Value="fake-ledger-token",
        Type="SecureString", Overwrite=True)
    manifest = parse_manifest(tomllib.loads(ROLE_MANIFEST), tmp_path / "pipekey.toml")
    team_broker = TeamBroker(from_manifest(manifest))
    moto.reset()
    key = "marketing/ads/acct_42/api_token"
    assert team_broker.read(key, "marketing", "key") == "fake-token-acct42"
    payload = decode_payload(team_broker.run(request_key("ads", None, {"account": "acct_42"}),
                                             "marketing"))
    assert payload.names["api_token"].value == "fake-token-acct42"
    assert team_broker.read("finance/ledger/api_token", "finance", "key") == "fake-ledger-token"
    assumed = [(a, s) for a, _, s in moto.signed if a == "AssumeRole"]
    assert sorted(assumed) == [("AssumeRole", "fin-reads"),
                               ("AssumeRole", "pipekey-team-marketing")]
    keys = _assumed_keys()
    split = next(i for i, (a, _, s) in enumerate(moto.signed) if s == "fin-reads")
    marketing = {k for a, k, _ in moto.signed[:split] if a.startswith("GetParameter")}
    finance = {k for a, k, _ in moto.signed[split:] if a.startswith("GetParameter")}
    assert marketing == {keys["pipekey-team-marketing"]}
    assert finance == {keys["fin-reads"]}


# -- leak hunt -----------------------------------------------------------------------------
LEAK_TOKEN = "fake-leak-Tok3n/with+odd=chars&more\"q'"
LEAK_PEM = ("-----BEGIN PRIVATE KEY-----\n"
            "MIIEfakeLEAKfakeNOTaREALkeyAAAAfakeLEAKfake0123456789abcdefghijklmnop\n"
            "-----END PRIVATE KEY-----\n")
LEAK_PW = "fake-leak-pg-p@ss:w/rd"


def test_broker_paths_leak_nothing(tmp_path: Path, caplog) -> None:
    """Key reads, refusals, run requests (served, refused, broken), payload decoding, the
    brokered run's reads and refresh: no value, in any encoding, in a log record (every
    field), an exception's text or traceback, or a repr."""
    import traceback
    from urllib.parse import quote

    from pipekey.redact import encodings

    caplog.set_level(logging.DEBUG)
    store = {**STORE, "marketing/ads/acct_42/access_token": LEAK_TOKEN,
             "marketing/ads/app_secret": LEAK_PEM,
             "connections/wh_prod": f"postgres://u:{quote(LEAK_PW, safe='')}@wh:5432/db"}
    team_broker, _ = _world(tmp_path, store)
    log = logging.getLogger("some.sdk")
    texts: list[str] = []

    def attempt(call):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - every failure's text is searched
            texts.append(str(exc) + "".join(traceback.format_exception(exc)))
            return None

    key = request_key("ads", None, {"account": "acct_42"}, "ads__run__1")
    payload = attempt(lambda: team_broker.run(key, "marketing"))
    assert payload is not None
    log.debug("payload %s", payload)
    log.info("answer %r", json.loads(payload))
    for call in (lambda: team_broker.run(key, "finance"), lambda: team_broker.run(key, None),
                 lambda: team_broker.read("marketing/ads/app_secret", "finance", "k"),
                 lambda: team_broker.read("connections/wh_prod", None, "k"),
                 lambda: decode_payload(payload[:-3]),
                 lambda: decode_payload(payload.replace('"v":1', '"v":2'))):
        attempt(call)
    decoded = decode_payload(payload)
    run = brokered_run(team_broker.lk.manifest, "ads", _fetch(team_broker, "marketing"),
                       params={"account": "acct_42"})
    with run:
        log.warning("token %s pem %s conn %s", run.secret("access_token"),
                    run.secret("app_secret"), run.connection("warehouse").to_uri())
        run.refresh("access_token")
        attempt(lambda: run.get("marketing/ads/acct_43/access_token"))
        texts += [repr(run), repr(decoded), repr(list(run._chain)), repr(decoded.secrets()),
                  repr(run.explain("access_token")), str(run.explain("app_secret").to_dict())]
    texts += [r.getMessage() + " " + repr(vars(r)) for r in caplog.records]
    everything = "\n".join(texts)
    pem_lines = [line for line in LEAK_PEM.splitlines() if "-----" not in line]
    for value in (LEAK_TOKEN, LEAK_PEM, LEAK_PW, *pem_lines):
        for form in encodings(value):
            assert form not in everything, f"a form of a value leaked: {form[:12]}..."


def test_dlt_provider_answers_from_a_brokered_run(tmp_path: Path) -> None:
    """dlt's lookups inside a brokered run answer from the held values: a name by the scope
    walk, the dlt table's key: target, and a connection's credentials."""
    pytest.importorskip("dlt")
    from dlt.common.typing import TSecretStrValue

    from pipekey.integrations.dlt import PipekeyProvider

    team_broker, _ = _world(tmp_path)
    provider = PipekeyProvider()
    with brokered_run(team_broker.lk.manifest, "ads", _fetch(team_broker, "marketing"),
                      params={"account": "acct_42"}):
        assert provider.get_value("access_token", TSecretStrValue, None, "sources",
                                  "ads")[0] == "fake-token-acct42"
        assert provider.get_value("extra", TSecretStrValue, None, "sources", "ads")[0] == \
            "fake-report-acct42"


def test_the_docs_example_manifest_loads(tmp_path: Path) -> None:
    """docs/airflow.md's broker-mode manifest is valid, and its two teams map the same conn_id
    each through their own pipeline."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "airflow.md").read_text()
    section = text[text.index("### The manifest"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    manifest = parse_manifest(tomllib.loads(block.group(1)), tmp_path / "pipekey.toml")
    broker = TeamBroker(Pipekey([MemoryBackend("memory")], env="prod", manifest=manifest))
    assert broker.connection_key("warehouse", "marketing", None) == \
        "connections/marketing_wh_prod"
    assert broker.connection_key("warehouse", "finance", None) == "connections/finance_wh"


# -- hostile run requests (red team) -------------------------------------------------------
def _raw_request(pipeline: str, body: dict[str, object]) -> str:
    """A request key built by hand, as a hostile DAG may send it (request_key refuses these)."""
    encoded = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    return f"{PREFIX}{pipeline}.{encoded}"


@pytest.mark.parametrize("param", ["env", "run_name", "name", "unknown"])
def test_a_request_parameter_that_is_no_scope_parameter_is_refused(tmp_path: Path,
                                                                   param: str) -> None:
    """A run request whose parameters name no scope field (``env``, ``run_name``, ``name``:
    keywords of Pipekey.pipeline) is one UsageError naming it, not a TypeError that Airflow
    would log and answer from its next backend."""
    team_broker, _ = _world(tmp_path)
    key = _raw_request("ads", {"v": 1, "env": None, "run": None,
                               "params": {"account": "acct_42", param: "prod"}})
    with pytest.raises(UsageError, match=f"no parameter '{param}'"):
        team_broker.run(key, "marketing")


def test_a_deeply_nested_request_is_a_usage_error() -> None:
    """JSON nested deeper than Python's recursion limit, within the key's length limit, is a
    malformed request (UsageError), not a RecursionError."""
    key = PREFIX + "ads." + base64.urlsafe_b64encode(b"[" * 1300).decode().rstrip("=")
    assert len(key) < 2000
    with pytest.raises(UsageError, match="is not a pipekey run request"):
        parse_request(key)


def test_a_run_request_names_only_environments_the_broker_serves(tmp_path: Path) -> None:
    """A team's run request may not fill ``{env}`` with text of its choosing: with
    ``connections/wh_{env}`` mapped by marketing, env "finance" would read finance's
    warehouse. Only the manifest's environments (else the server's own) are served, and no
    chain is built for any other name asked for."""
    store = {**STORE, "connections/wh_finance": "postgres://f:fake-fin-wh-secret@fin/db"}
    team_broker, _ = _world(tmp_path, store)
    for env in ("finance", "staging", "zzz1"):
        with pytest.raises(AccessDenied, match=f"'marketing' may not open pipekey pipeline "
                                               f"'ads' in environment '{env}'") as info:
            team_broker.run(request_key("ads", env, {"account": "acct_42"}), "marketing")
        assert "fake-" not in str(info.value)
    assert not team_broker.lk._chains  # none but its own (prod), which it holds apart
    payload = decode_payload(team_broker.run(request_key("ads", "prod", {"account": "acct_42"}),
                                             "marketing"))
    assert payload.connections["warehouse"].key == "connections/wh_prod"
    listed = MANIFEST.replace('env = "prod"', 'env = "prod"\nenvironments = ["prod", "dev"]')
    manifest = parse_manifest(tomllib.loads(listed), tmp_path / "pipekey.toml")
    dev_store = {**store, "connections/wh_dev": "postgres://u:fake-wh-dev-pw@wh/db"}
    listing = TeamBroker(Pipekey([MemoryBackend("memory", data=dev_store)], env="prod",
                                  manifest=manifest))
    payload = decode_payload(listing.run(request_key("ads", "dev", {"account": "acct_42"}),
                                         "marketing"))
    assert payload.env == "dev" and payload.connections["warehouse"].key == "connections/wh_dev"
    with pytest.raises(AccessDenied, match="in environment 'finance'"):
        listing.run(request_key("ads", "finance", {"account": "acct_42"}), "marketing")


WIDENING = """
env = "prod"
[backends.memory]
type = "env"
[pipelines.lakes]
scope = "data/{dataset}"
requires = ["token"]
connections = { lake = "connections/lake_{dataset}" }
teams = ["marketing"]
[pipelines.ledger]
scope = "data/ledger"
requires = ["token"]
connections = { lake = "connections/lake_finance" }
teams = ["finance"]
"""
OWNED = """
env = "prod"
[backends.memory]
type = "env"
[pipelines.lakes]
scope = "data/{dataset}"
requires = ["token"]
connections = { lake = "connections/lake_{dataset}" }
grants = ["finance/ledger/public_token"]
teams = ["marketing"]
[pipelines.ledger]
scope = "finance/ledger"
requires = ["token"]
connections = { lake = "connections/finance_lake" }
teams = ["finance"]
"""
OWNED_STORE = {
    "data/clicks/token": "fake-clicks-token",
    "connections/lake_clicks": "postgres://m:fake-clicks-lake-pw@lake/db",
    "finance/ledger/token": "fake-ledger-token-fin",
    "finance/ledger/public_token": "fake-ledger-public-token",
    "connections/finance_lake": "postgres://f:fake-fin-lake-pw@lake/db",
}


def test_teams_whose_templates_overlap_are_refused_at_load(tmp_path: Path) -> None:
    """Marketing's templates (``data/{dataset}``, ``connections/lake_{dataset}``) start with
    the literal prefixes ``data/`` and ``connections/lake_``, which finance's ``data/ledger``
    and ``connections/lake_finance`` fall under: a parameter value of marketing's would reach
    finance's keys, so the manifest is refused at load naming both teams (a team owns
    prefixes, not patterns)."""
    with pytest.raises(ManifestError, match="teams 'marketing' and 'finance' own overlapping "
                                            "keys: pipelines.lakes.(scope = 'data/{dataset}'|"
                                            "connections.lake = 'connections/lake_)"):
        parse_manifest(tomllib.loads(WIDENING), tmp_path / "pipekey.toml")


def test_a_team_reads_another_teams_key_only_through_an_explicit_grant(tmp_path: Path,
                                                                      caplog) -> None:
    """With prefixes that do not overlap, a key finance owns is refused to marketing, held or
    not, unless one of marketing's pipelines grants it; each team's own keys are served."""
    caplog.set_level(logging.DEBUG)
    manifest = parse_manifest(tomllib.loads(OWNED), tmp_path / "pipekey.toml")
    team_broker = TeamBroker(Pipekey([MemoryBackend("memory", data=OWNED_STORE)],
                                      env="prod", manifest=manifest))
    seen = []
    for key in ("finance/ledger/token", "connections/finance_lake", "finance/ledger/absent"):
        with pytest.raises(AccessDenied, match=f"'marketing' may not read key \\('{key}'\\)"
                           ) as info:
            team_broker.read(key, "marketing", "key")
        seen.append(str(info.value))
    assert team_broker.read("finance/ledger/public_token", "marketing", "key") == \
        "fake-ledger-public-token"
    payload = decode_payload(team_broker.run(request_key("lakes", None, {"dataset": "clicks"}),
                                             "marketing"))
    assert payload.names["token"].value == "fake-clicks-token"
    assert payload.connections["lake"].value == OWNED_STORE["connections/lake_clicks"]
    payload = decode_payload(team_broker.run(request_key("ledger"), "finance"))
    assert payload.connections["lake"].value == OWNED_STORE["connections/finance_lake"]
    assert team_broker.read("finance/ledger/token", "finance", "key") == "fake-ledger-token-fin"
    text = "\n".join(seen) + caplog.text
    for value in ("fake-ledger-token-fin", "fake-fin-lake-pw"):
        assert value not in text


def test_a_minted_connection_is_refused_and_an_unholdable_key_left_to_airflow(
        tmp_path: Path) -> None:
    """A team's conn_id mapped to ``dynamic:NAME`` is refused authoritatively with "open a
    run" (it was an InvalidKey, on which Airflow asks its next backend, the metastore); a
    Variable name no pipekey key can spell (a space) is None, not refused: pipekey cannot
    hold it, so Airflow's own backends answer it."""
    dynamic = MANIFEST.replace(
        "[pipelines.crm]", '[credentials.crm_rw]\ntype = "postgres_role"\n'
        'admin = "connections/crm_admin"\nmember_of = ["etl"]\n[pipelines.crm]').replace(
        'requires = ["api_key"]\nteams = ["marketing"]',
        'requires = ["api_key"]\nconnections = { crm_db = "dynamic:crm_rw" }\n'
        'teams = ["marketing"]')
    manifest = parse_manifest(tomllib.loads(dynamic), tmp_path / "pipekey.toml")
    team_broker = TeamBroker(Pipekey([MemoryBackend("memory", data=STORE)], env="prod",
                                      manifest=manifest))
    with pytest.raises(AccessDenied, match="'marketing': connection 'crm_db' of pipeline 'crm' "
                                           "is a login minted per run"):
        team_broker.connection_key("crm_db", "marketing", "airflow/connections/crm_db")
    assert team_broker.read("airflow/variables/my setting", "marketing", "variable") is None
    assert team_broker.read("airflow/variables/my setting", None, "variable") is None


def test_the_api_servers_audit_names_the_team_not_only_the_tasks_run_name(
        tmp_path: Path) -> None:
    """A run request's run name is whatever the task sends (another team's DAG run, say); the
    API server's audit records of the run start with the team Airflow authenticated."""
    from pipekey.audit import Auditor

    class Sink:
        events: list = []

        def write(self, event) -> None:
            self.events.append(event.to_dict())

    manifest = parse_manifest(tomllib.loads(MANIFEST), tmp_path / "pipekey.toml")
    team_broker = TeamBroker(Pipekey([MemoryBackend("memory", data=STORE)], env="prod",
                                      manifest=manifest, auditor=Auditor([Sink()])))
    team_broker.run(request_key("crm", None, {}, "ledger_daily__manual__1__load"), "marketing")
    team_broker.run(request_key("crm"), "marketing")
    runs = {event["run"] for event in Sink.events}
    assert "marketing/ledger_daily__manual__1__load" in runs
    assert runs and all(run.startswith("marketing/") for run in runs), runs


def test_a_refusal_in_another_teams_namespace_does_not_tell_what_exists(tmp_path: Path) -> None:
    """Finance asking for marketing's keys is refused alike whether the store holds them or
    not, without asking the store (a None for an absent account told finance which accounts
    marketing has); a key no team's policy covers is still None when absent."""
    team_broker, memory = _world(tmp_path)
    messages = []
    for key in ("marketing/ads/acct_42/access_token", "marketing/ads/acct_99/access_token"):
        memory.calls.clear()
        for team in ("finance", None):
            with pytest.raises(AccessDenied) as info:
                team_broker.read(key, team, "key 'x'")
            messages.append(str(info.value).replace(key, "KEY"))
        assert memory.calls == [], key
    assert messages[0] == messages[2] and messages[1] == messages[3]
    assert team_broker.read("nobody/owns/this", "finance", "key") is None


def _strings_reachable(root: object) -> list[str]:
    """Every str reachable from ``root`` through object references (gc referents): instance
    and slot attributes, containers, frozen dataclasses, bound methods and the closures of
    pipekey's own functions. Modules, classes and other code are not followed (their globals
    hold the whole process: the masker's registry, this test's constants)."""
    import gc
    import types

    seen, found, todo = set(), [], [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            found.append(obj)
            continue
        if isinstance(obj, (types.ModuleType, type, types.CodeType, types.BuiltinFunctionType)):
            continue
        if isinstance(obj, types.FunctionType):
            if obj.__module__.startswith("pipekey"):  # its closure, not its globals
                todo += [c.cell_contents for c in obj.__closure__ or ()
                         if c.cell_contents is not None]
            continue
        todo += gc.get_referents(obj)
    return found


def test_a_closed_brokered_run_holds_no_value(tmp_path: Path) -> None:
    """After a brokered run ends, nothing reachable from it (its source, the payload the
    broker sent, its chain, its connections) holds a value: only names and metadata."""
    team_broker, _ = _world(tmp_path)
    with brokered_run(team_broker.lk.manifest, "ads", _fetch(team_broker, "marketing"),
                      params={"account": "acct_42"}, run_name="ads__closed") as run:
        assert run.connection("warehouse").password == "fake-wh-pw"
        assert run.get("marketing/reports/acct_42") == "fake-report-acct42"
        source = list(run._chain)[0]
        held = [s for s in _strings_reachable(run) if "fake-" in s]
        assert "fake-token-acct42" in held and "fake-wh-pw" in " ".join(held)  # the walk sees
    assert [s for s in _strings_reachable(run) if "fake-" in s] == []
    assert [s for s in _strings_reachable(source) if "fake-" in s] == []
    assert source.payload.run_name == "marketing/ads__closed"  # what it was, for describe()
    assert "ads__closed" in source.describe()
