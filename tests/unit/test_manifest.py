"""The manifest: loading, environments, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipekey
from pipekey import ManifestError
from pipekey.backends.env import EnvBackend
from pipekey.backends.files import FilesBackend
from pipekey.backends.local import LocalBackend

FULL = """
env = "dev"
environments = ["dev", "prod"]
chain = ["env", "local", "files"]

[backends.local]
type = "local"
path = "state/{env}/store.db"

[backends.env]
type = "env"
prefix = "PIPEKEY__"

[backends.files]
type = "files"
path = "secrets.{env}.toml"
optional = true

[pipelines.facebook_ads]
scope = "marketing/facebook/{account}"
requires = ["access_token", "app_secret"]
connections = { warehouse = "connections/snowflake_{env}" }
grants = ["shared/slack_webhook"]
dags = ["facebook_ads*"]
aws_role = { arn = "arn:aws:iam::123456789012:role/facebook-ads", duration = 900 }
"""


def write(tmp: Path, text: str) -> Path:
    path = tmp / "pipekey.toml"
    path.write_text(text)
    return path


def test_no_manifest_means_the_local_store_alone(isolated: Path) -> None:
    """With no manifest anywhere the chain is one local store under ./.pipekey."""
    lk = pipekey.load()
    assert [b.name for b in lk.chain] == ["local"]
    (local,) = lk.chain
    assert isinstance(local, LocalBackend)
    assert local.path == isolated / ".pipekey" / "store.db"
    assert lk.env == "dev" and lk.manifest.path is None


def test_full_manifest_builds_the_chain_in_order(isolated: Path) -> None:
    """Backends are built in chain order, with paths relative to the manifest and {env} filled."""
    path = write(isolated, FULL)
    lk = pipekey.load(path, env="prod")
    assert [type(b) for b in lk.chain] == [EnvBackend, LocalBackend, FilesBackend]
    assert lk.backend("local").path == isolated / "state" / "prod" / "store.db"
    assert lk.backend("files").path == isolated / "secrets.prod.toml"
    assert lk.manifest.pipelines["facebook_ads"].requires == ["access_token", "app_secret"]


def test_env_precedence(isolated: Path, monkeypatch) -> None:
    """The env argument beats $PIPEKEY_ENV, which beats the manifest's env."""
    path = write(isolated, FULL)
    assert pipekey.load(path).env == "dev"
    monkeypatch.setenv("PIPEKEY_ENV", "prod")
    assert pipekey.load(path).env == "prod"
    assert pipekey.load(path, env="dev").env == "dev"


def test_pipekey_config_variable_and_cwd_lookup(isolated: Path, monkeypatch) -> None:
    """$PIPEKEY_CONFIG names the manifest; else ./pipekey.toml is used."""
    other = isolated / "elsewhere.toml"
    other.write_text('[backends.only_env]\ntype = "env"\n')
    monkeypatch.setenv("PIPEKEY_CONFIG", str(other))
    assert [b.name for b in pipekey.load().chain] == ["only_env"]
    monkeypatch.delenv("PIPEKEY_CONFIG")
    write(isolated, '[backends.here]\ntype = "env"\n')
    assert [b.name for b in pipekey.load().chain] == ["here"]


@pytest.mark.parametrize("text, field, problem", [
    pytest.param('[backends.x]\ntype = "aws_sm"\n', "backends.x.type",
                 "unknown backend type 'aws_sm' (known: ", id="unknown-type"),
    pytest.param('[backends.x]\npath = "a"\n', "backends.x.type", "missing", id="missing-type"),
    pytest.param('[backends.x]\ntype = "files"\n', "backends.x.path", "missing",
                 id="missing-field"),
    pytest.param('[backends.x]\ntype = "env"\nprefx = "A"\n', "backends.x.prefx",
                 "unknown field", id="typo-field"),
    pytest.param('chain = ["local", "ssm"]\n[backends.local]\ntype = "local"\n', "chain[1]",
                 "'ssm' is not a backend defined under [backends]", id="chain-unknown"),
    pytest.param('[pipelines.p]\nrequires = ["a"]\n', "pipelines.p.scope", "missing",
                 id="pipeline-no-scope"),
    pytest.param('[pipelines.p]\nscope = "a"\nrequires = "a"\n', "pipelines.p.requires",
                 'must be a list, e.g. requires = ["a"] (got text)', id="pipeline-bad-type"),
    pytest.param('chian = ["local"]\n', "chian", "unknown field (did you mean 'chain'?)",
                 id="suggest-chain"),
    pytest.param('[pipelines.p]\nscope = "a"\nrequire = ["x"]\n', "pipelines.p.require",
                 "unknown field (did you mean 'requires'?)", id="suggest-requires"),
    pytest.param('[pipelines.p]\nscope = "a"\naws_role = { arn = "x", duraton = 900 }\n',
                 "pipelines.p.aws_role.duraton", "did you mean 'duration'?", id="suggest-nested"),
    pytest.param('[audit]\nsinks = [{ type = "file", pth = "a" }]\n', "audit.sinks[0].pth",
                 "did you mean 'path'?", id="suggest-in-list"),
    pytest.param('chain = "local"\n', "chain", 'must be a list, e.g. chain = ["local"] (got text)',
                 id="chain-string"),
    pytest.param('[pipelines.p]\nscope = ""\n', "pipelines.p.scope", "'' is not a key: empty key",
                 id="empty-scope"),
    pytest.param('[pipelines.p]\nscope = "a/{account}/.."\n', "pipelines.p.scope",
                 "is not a key: segment 3 is '..'", id="dotdot-scope"),
    pytest.param('[pipelines.p]\nscope = "a"\nconnections = { w = "c/../x" }\n',
                 "pipelines.p.connections.w", "segment 2 is '..'", id="dotdot-mapping"),
    pytest.param('[pipelines.p]\nscope = "a/{account"\n', "pipelines.p.scope",
                 "unbalanced '{'", id="unbalanced-brace"),
    pytest.param('enviroment = "dev"\n', "enviroment", "unknown field", id="top-typo"),
    pytest.param('env = "staging"\nenvironments = ["dev"]\n', "env", "not one of",
                 id="env-not-listed"),
    pytest.param('env = "../prod"\n', "env", "not a valid environment name", id="env-path"),
    pytest.param('on_backend_error = "ignore"\n', "on_backend_error",
                 "must be one of 'fall_through' or 'raise'", id="bad-literal"),
    pytest.param('[backends.ssm]\ntype = "aws_ssm"\ncache = { ttl = -1 }\n',
                 "backends.ssm.cache.ttl", "must be more than 0 (got -1)", id="cache-ttl"),
    pytest.param('[backends.local]\ntype = "local"\ncache = { max_entries = 0 }\n',
                 "backends.local.cache.max_entries", "must be at least 1", id="cache-size"),
    pytest.param('[backends.v]\ntype = "vault"\ncache = { tll = 60 }\n', "backends.v.cache.tll",
                 "did you mean 'ttl'?", id="cache-typo"),
    pytest.param('[backends.v]\ntype = "vault"\ncache = "no"\n', "backends.v.cache",
                 "must be a table", id="cache-not-a-table"),
    pytest.param('[backends.local]\ntype = "local"\nrate_limit = { rps = 0 }\n',
                 "backends.local.rate_limit.rps", "must be more than 0", id="rate-limit-rps"),

    pytest.param('[pipelines.a]\nscope = "a"\nteams = ["mkt"]\nconnections = { wh = "c/a" }\n'
                 '[pipelines.b]\nscope = "b"\nteams = ["fin", "mkt"]\n'
                 'connections = { wh = "c/b" }\n', "pipelines.b.connections.wh",
                 "team 'mkt': connection 'wh' is mapped by both pipelines 'a' and 'b'",
                 id="team-conn-ambiguous"),
    pytest.param('[pipelines.a]\nscope = "a"\nteams = ["mkt"]\n[teams.fin]\n'
                 'aws_role = { arn = "arn:aws:iam::123456789012:role/fin" }\n', "teams.fin",
                 "no pipeline serves team 'fin'", id="team-table-unserved"),
    pytest.param('[pipelines.a]\nscope = "a"\nteams = ["mkt/x"]\n', "pipelines.a.teams[0]",
                 "'mkt/x' is not an Airflow team name", id="team-bad-name"),
    pytest.param('[pipelines.a]\nscope = "a"\nteams = ["ab"]\n', "pipelines.a.teams[0]",
                 "3 to 50 letters", id="team-too-short"),
    pytest.param('[pipelines.a]\nscope = "a"\nteams = ["mkt"]\n[teams.mkt]\nrole = "x"\n',
                 "teams.mkt.role", "unknown field", id="team-table-typo"),
])
def test_errors_name_file_and_field(isolated: Path, text: str, field: str, problem: str) -> None:
    """Each invalid manifest raises one ManifestError naming the file and the field."""
    path = write(isolated, text)
    with pytest.raises(ManifestError) as info:
        pipekey.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert problem in message
    assert "\n" not in message


def test_invalid_toml_and_missing_file(isolated: Path) -> None:
    """Broken TOML and a missing manifest are ManifestErrors naming the file."""
    path = write(isolated, "chain = [\n")
    with pytest.raises(ManifestError, match=r"pipekey.toml: not valid TOML"):
        pipekey.load(path)
    with pytest.raises(ManifestError, match=r"nope.toml: no such file"):
        pipekey.load(isolated / "nope.toml")


def test_manifest_error_exit_code_is_usage() -> None:
    """Manifest errors are usage errors (exit 2)."""
    assert ManifestError("f", "x", "y").exit_code == 2


@pytest.mark.parametrize("text, expected", [
    pytest.param('[pipelines.p]\nscope = ""\n', "pipelines.p.scope: '' is not a key",
                 id="empty-scope"),
    pytest.param('[pipelines.p]\nscope = "a/{account}"\ngrants = ["shared/../x"]\n',
                 "pipelines.p.grants[0]: 'shared/../x' is not a key", id="dotdot-grant"),
    pytest.param('[pipelines.p]\nscope = "a/{account"\n', "pipelines.p.scope: 'a/{account' "
                 "has an unbalanced", id="unbalanced-brace"),
    pytest.param('chian = ["local"]\n', "chian: unknown field (did you mean 'chain'?)",
                 id="typo"),
])
@pytest.mark.parametrize("command", ["doctor", "check"])
def test_doctor_validates_pipelines_as_check_does(isolated: Path, master_key: str, command: str,
                                                  text: str, expected: str) -> None:
    """`pipekey doctor` and `pipekey check` both refuse a broken pipeline template (even one
    needing parameters) with one line naming the field."""
    from ..conftest import run_cli

    write(isolated, text + '[backends.local]\ntype = "local"\n')
    result = run_cli(command)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_pipeline_parameters_belong_to_the_model() -> None:
    """PipelineConfig.parameters() names every parameter its scope, grants and connection
    mappings use, without env (always given)."""
    from pipekey.manifest import parse_manifest

    manifest = parse_manifest({"pipelines": {"p": {
        "scope": "marketing/{account}/{env}", "grants": ["shared/{region}/"],
        "connections": {"warehouse": "connections/{db}_{env}"}}}}, Path("pipekey.toml"))
    assert manifest.pipelines["p"].parameters() == {"account", "region", "db"}


def test_teams_load(isolated: Path) -> None:
    """Pipelines name the Airflow teams they serve; [teams.NAME] gives a team's read role; two
    teams may each map the same conn_id through their own pipelines."""
    path = write(isolated, '[pipelines.a]\nscope = "a"\nteams = ["mkt"]\n'
                           'connections = { wh = "c/a" }\n'
                           '[pipelines.b]\nscope = "b"\nteams = ["fin"]\n'
                           'connections = { wh = "c/b" }\n'
                           '[teams.mkt]\naws_role = { arn = "arn:aws:iam::123456789012:role/m", '
                           'session_name = "mkt-reads" }\n')
    manifest = pipekey.load(path).manifest
    assert manifest is not None
    assert manifest.team_names() == {"mkt", "fin"}
    assert manifest.pipelines["b"].teams == ["fin"]
    role = manifest.teams["mkt"].aws_role
    assert role is not None and role.session_name == "mkt-reads"
