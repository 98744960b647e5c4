"""`pipekey copy` and `pipekey diff`: a real dlt secrets.toml and a real `airflow
connections export` file into SSM on moto and the local store, read back equal."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from pipekey import Connection, StoreCorrupt
from pipekey.backends.aws_ssm import SsmBackend, SsmConfig
from pipekey.backends.base import Writable
from pipekey.backends.files import flatten
from pipekey.backends.local import LocalBackend
from pipekey.copy import apply_plan, diff, open_store, plan_copy
from pipekey.testing import MemoryBackend

from ..conftest import run_cli
from ..servers import airflow_env

DLT_SECRETS = '''
[sources.facebook_ads]
access_token = "fake-fb-access-token"
app_secret = "fake-fb-app-secret"

[sources.google_analytics.credentials]
project_id = "fake-project"
client_email = "loader@fake-project.iam.example"
private_key = "-----BEGIN PRIVATE KEY-----\\nfake-key-body\\n-----END PRIVATE KEY-----\\n"

[destination.postgres.credentials]
database = "analytics"
username = "loader"
password = "fake-pg-password"
host = "db.internal"
port = 5432
connect_timeout = 15
'''


def _ssm(endpoint: str, **extra) -> SsmBackend:
    return SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=f"/lk-copy/{uuid.uuid4().hex[:8]}",
                                       region="eu-central-1", endpoint_url=endpoint, **extra))


def _expected(path: Path) -> dict[str, str]:
    return flatten(tomllib.loads(path.read_text()))


def test_dlt_secrets_toml_into_ssm_and_local(isolated: Path, aws_env: str, master_key) -> None:
    """Every value of a dlt secrets.toml arrives as its own key, equal, in SSM and locally."""
    toml = isolated / "secrets.toml"
    toml.write_text(DLT_SECRETS)
    expected = _expected(toml)
    assert "sources/facebook_ads/access_token" in expected and len(expected) == 11
    source = open_store(f"file:{toml}")
    for dest in (_ssm(aws_env), LocalBackend("local", isolated / "store.db")):
        plan, values = plan_copy(source, dest)
        assert plan.count("add") == len(expected)
        result = apply_plan(plan, values)
        assert result.failed == {} and len(result.copied) == len(expected)
        back = {k: s.value for k, s in dest.get_many(list(expected)).items()}
        assert back == expected
        assert all(r["state"] == "same" for r in diff(source, dest))


@pytest.fixture
def airflow_export(airflow_home: Path, tmp_path: Path) -> Path:
    """`airflow connections export` of three connections, made with the real Airflow CLI."""
    env = airflow_env(airflow_home, {})

    def airflow(*args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]

    suffix = uuid.uuid4().hex[:6]
    airflow("connections", "add", f"warehouse_{suffix}", "--conn-uri",
            "postgres://loader:fake-wh-p%40ss@db.internal:5432/analytics?sslmode=require")
    airflow("connections", "add", f"slack_{suffix}", "--conn-json", json.dumps(
        {"conn_type": "http", "host": "hooks.example.com", "password": "fake-slack-token",
         "extra": {"timeout": 5}}))
    airflow("connections", "add", f"lake_{suffix}", "--conn-type", "aws", "--conn-login",
            "AKIAFAKE", "--conn-password", "fake-aws-secret", "--conn-extra",
            json.dumps({"region_name": "eu-central-1"}))
    out = tmp_path / "connections.json"
    airflow("connections", "export", str(out))
    data = json.loads(out.read_text())
    assert {f"warehouse_{suffix}", f"slack_{suffix}", f"lake_{suffix}"} <= set(data)
    return out


@pytest.mark.slow
def test_airflow_export_into_ssm_and_local(airflow_export: Path, aws_env: str, isolated: Path,
                                           master_key) -> None:
    """Airflow's export becomes airflow/connections/<id> keys that parse back to the same
    connections."""
    originals = {cid: Connection.from_json(body, cid)
                 for cid, body in json.loads(airflow_export.read_text()).items()}
    source = open_store(f"airflow-connections:{airflow_export}")
    for dest in (_ssm(aws_env), LocalBackend("local", isolated / "store.db")):
        result = apply_plan(*plan_copy(source, dest))
        assert result.failed == {}
        for conn_id, original in originals.items():
            stored = dest.get(f"airflow/connections/{conn_id}").value
            back = Connection.from_value(stored, conn_id)
            assert (back.conn_type, back.host, back.login, back.password, back.port,
                    back.schema, back.extra) == (original.conn_type, original.host,
                                                 original.login, original.password,
                                                 original.port, original.schema,
                                                 original.extra)


def test_dry_run_and_rerun_write_nothing(isolated: Path, aws_env: str, moto) -> None:
    """--dry-run makes no write; a second copy finds everything identical and writes nothing."""
    toml = isolated / "secrets.toml"
    toml.write_text(DLT_SECRETS)
    prefix = f"/lk-copy/{uuid.uuid4().hex[:8]}"
    moto.reset()
    dry = run_cli("copy", f"file:{toml}", f"ssm:{prefix}", "--dry-run", "--json",
                  env={"AWS_ENDPOINT_URL": aws_env})
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["summary"]["add"] == 11 and moto.counts["PutParameter"] == 0
    first = run_cli("copy", f"file:{toml}", f"ssm:{prefix}", env={"AWS_ENDPOINT_URL": aws_env})
    assert first.returncode == 0 and "copied 11" in first.stdout
    moto.reset()
    again = run_cli("copy", f"file:{toml}", f"ssm:{prefix}", env={"AWS_ENDPOINT_URL": aws_env})
    assert "copied 0, skipped 11 (11 already identical" in again.stdout
    assert moto.counts["PutParameter"] == 0
    for text in (dry.stdout, dry.stderr, first.stdout, first.stderr, again.stdout):
        assert "fake-" not in text


def test_too_large_is_reported_or_split_never_truncated(isolated: Path, aws_env: str) -> None:
    """A 6 KB value is too large for a Standard parameter and is reported; with split it is
    stored whole."""
    big = {"certs/bundle": "fake-" + "c" * 6000, "small": "fake-small"}
    source = MemoryBackend("src", big)
    standard = _ssm(aws_env)
    plan, values = plan_copy(source, standard)
    assert [(i.key, i.action) for i in plan.items] == [("certs/bundle", "too_large"),
                                                       ("small", "add")]
    result = apply_plan(plan, values)
    assert result.copied == ["small"] and standard.get("certs/bundle") is None
    split = _ssm(aws_env, split=True)
    plan, values = plan_copy(source, split)
    assert {i.key: i.action for i in plan.items}["certs/bundle"] == "split"
    apply_plan(plan, values)
    assert split.get("certs/bundle").value == big["certs/bundle"]


class BreaksOnThirdWrite(MemoryBackend):
    """A store whose third write fails, as a full disk or a revoked permission would."""

    writes = 0

    def _put(self, key, value):
        self.writes += 1
        if self.writes == 3:
            raise StoreCorrupt(self.name, f"disk full while writing {key!r}")
        return super()._put(key, value)


def test_failure_midway_reports_what_was_and_was_not_copied() -> None:
    """A write failing at the third key: two copied, one failed, the rest not attempted;
    after the fault, running again copies only what is missing."""
    source = MemoryBackend("src", {f"k/{i}": f"fake-{i}" for i in range(6)})
    dest = BreaksOnThirdWrite("dst")
    result = apply_plan(*plan_copy(source, dest))
    assert result.copied == ["k/0", "k/1"]
    assert list(result.failed) == ["k/2"] and "disk full" in result.failed["k/2"]
    assert result.not_attempted == ["k/3", "k/4", "k/5"]
    assert dest.list_keys("") == ["k/0", "k/1"]
    held = dest.get_many(dest.list_keys(""))
    healthy = MemoryBackend("dst2", {k: s.value for k, s in held.items()})
    plan, values = plan_copy(source, healthy)
    assert plan.count("same") == 2 and plan.count("add") == 4
    assert apply_plan(plan, values).copied == ["k/2", "k/3", "k/4", "k/5"]


def test_changed_keys_need_a_decision(isolated: Path, master_key) -> None:
    """A differing key stops the copy before any write unless --overwrite/--skip-existing."""
    toml = isolated / "s.toml"
    toml.write_text('a = "fake-new"\nb = "fake-b"\n')
    assert run_cli("set", "a", input="fake-old").returncode == 0
    refused = run_cli("copy", f"file:{toml}", "local")
    assert refused.returncode == 2 and "1 key differs in local" in refused.stderr
    assert run_cli("get", "b").returncode == 1
    assert run_cli("copy", f"file:{toml}", "local", "--skip-existing").returncode == 0
    assert run_cli("get", "a", "--reveal").stdout.strip() == "fake-old"
    assert run_cli("copy", f"file:{toml}", "local", "--overwrite").returncode == 0
    assert run_cli("get", "a", "--reveal").stdout.strip() == "fake-new"


def test_diff_and_prefixes(isolated: Path, master_key) -> None:
    """diff reports drift by key and version; --prefix and --dest-prefix re-root keys."""
    a = MemoryBackend("a", {"app/x": "fake-1", "app/y": "fake-2", "app/only_a": "fake-3"})
    b = MemoryBackend("b", {"copy/x": "fake-1", "copy/y": "fake-changed", "copy/only_b": "f"})
    plan, values = plan_copy(a, b, prefix="app", dest_prefix="copy")
    assert {i.key: i.action for i in plan.items} == {"copy/x": "same", "copy/y": "change",
                                                      "copy/only_a": "add"}
    states = {r["key"]: r["state"] for r in diff(a, MemoryBackend("c", {"app/x": "fake-1",
                                                                       "app/y": "other",
                                                                       "app/z": "new"}))}
    assert states == {"app/only_a": "only_in_a", "app/x": "same", "app/y": "differs",
                      "app/z": "only_in_b"}
    toml = isolated / "s.toml"
    toml.write_text('a = "fake-a"\n')
    result = run_cli("diff", f"file:{toml}", "local", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["keys"] == [{"key": "a", "state": "only_in_a",
                                                  "version_a": None, "version_b": None}]


def test_unknown_store_and_bare_env(isolated: Path) -> None:
    """Bad store specs are usage errors that say what is accepted."""
    assert "unknown store 'nope'" in run_cli("copy", "nope", "local").stderr
    assert "env: needs a prefix" in run_cli("copy", "env:", "local").stderr
    missing = run_cli("copy", f"airflow-connections:{isolated / 'none.json'}", "local")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_copy_into_vault_by_ad_hoc_spec(isolated: Path, vault_env, fake_vault,
                                        monkeypatch) -> None:
    """`pipekey copy file:... vault:secret/PREFIX` writes into Vault KV v2 (token from
    $VAULT_TOKEN); a second run finds everything the same."""
    from ..fakes.vault import ROOT_TOKEN

    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    toml = isolated / "secrets.toml"
    toml.write_text('[sources.facebook]\naccess_token = "fake-fb-copy"\napp_id = "fake-app"\n')
    prefix = f"copy/{uuid.uuid4().hex[:8]}"
    first = run_cli("copy", f"file:{toml}", f"vault:secret/{prefix}")
    assert first.returncode == 0 and "copied 2" in first.stdout, first.stderr
    assert fake_vault.v2[f"secret/{prefix}/sources/facebook/access_token"]["current"] == 1
    again = run_cli("copy", f"file:{toml}", f"vault:secret/{prefix}")
    assert "copied 0, skipped 2 (2 already identical" in again.stdout
    assert "vault:MOUNT[/PREFIX]" in run_cli("copy", "vault:", "local").stderr


def test_airflow_export_is_a_read_only_store(tmp_path: Path) -> None:
    """An `airflow connections export` file opens as a read-only store of its own (not a test
    double): it lists and reads connection keys, and refuses writes naming the store."""
    from pipekey.errors import PipekeyError
    from pipekey.testing import MemoryBackend as Double

    export = tmp_path / "connections.json"
    export.write_text(json.dumps({"wh": {"conn_type": "postgres", "host": "db.internal",
                                         "password": "fake-pw"}}))
    store = open_store(f"airflow-connections:{export}")
    assert not isinstance(store, Double)
    assert store.list_keys("airflow") == ["airflow/connections/wh"]
    value = store.get("airflow/connections/wh").value
    assert Connection.from_value(value, "wh").password == "fake-pw"
    assert not isinstance(store, Writable)
    plan, values = plan_copy(Double("src", {"airflow/connections/other": "fake-x"}), store)
    with pytest.raises(PipekeyError) as info:
        apply_plan(plan, values)
    assert "airflow-connections:" in str(info.value) and "fake-x" not in str(info.value)
