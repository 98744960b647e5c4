"""``[credentials.NAME]`` and ``dynamic:NAME`` in the manifest, and the Lease contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipekey import Connection, ManifestError
from pipekey.credentials import Lease
from pipekey.credentials.base import MIN_TTL_ENV, PostgresRoleConfig, VaultDatabaseConfig
from pipekey.manifest import load_manifest

HEAD = """
[backends.local]
type = "local"

[backends.vault]
type = "vault"
url = "http://127.0.0.1:1"
"""

PG = """
[credentials.warehouse_rw]
type = "postgres_role"
admin = "connections/warehouse_admin_{env}"
member_of = ["etl_writer"]
ttl = 600
"""

PIPE = """
[pipelines.loader]
scope = "loader"
connections = { warehouse = "dynamic:warehouse_rw" }
"""


def load(tmp: Path, text: str) -> object:
    path = tmp / "pipekey.toml"
    path.write_text(HEAD + text)
    return load_manifest(path)


def test_a_postgres_role_definition_loads_with_its_defaults(isolated: Path) -> None:
    """A definition loads with its defaults: connection limit 5, no sweep on open."""
    manifest = load(isolated, PG + PIPE)
    cfg = manifest.credentials["warehouse_rw"]  # type: ignore[attr-defined]
    assert isinstance(cfg, PostgresRoleConfig)
    assert (cfg.ttl, cfg.connection_limit, cfg.sweep_on_open) == (600, 5, False)
    assert cfg.member_of == ["etl_writer"]


def test_a_vault_database_definition_loads(isolated: Path) -> None:
    """A vault_database definition names a vault backend, a role and a base connection."""
    manifest = load(isolated, """
[credentials.wh]
type = "vault_database"
backend = "vault"
role = "etl"
connection = "connections/warehouse_{env}"
""")
    cfg = manifest.credentials["wh"]  # type: ignore[attr-defined]
    assert isinstance(cfg, VaultDatabaseConfig)
    assert (cfg.mount, cfg.ttl) == ("database", None)


@pytest.mark.parametrize("text, where, says", [
    pytest.param(PG.replace("ttl = 600", "ttl = 10"), "credentials.warehouse_rw.ttl",
                 "at least 60", id="ttl-below-minimum"),
    pytest.param(PG.replace("ttl = 600", "tll = 600"), "credentials.warehouse_rw.tll",
                 "did you mean 'ttl'", id="typo"),
    pytest.param(PG.replace('"postgres_role"', '"postgres"'), "credentials.warehouse_rw.type",
                 "unknown credential type", id="unknown-type"),
    pytest.param(PG.replace('member_of = ["etl_writer"]', ""),
                 "credentials.warehouse_rw.member_of", "missing", id="no-member-of"),
    pytest.param(PG.replace("_{env}", "_{account}"), "credentials.warehouse_rw.admin",
                 "only {env}", id="scope-parameter-in-admin"),
    pytest.param(PG.replace("ttl = 600", "connection_limit = 0"),
                 "credentials.warehouse_rw.connection_limit", "at least 1", id="limit"),
    pytest.param(PG + PIPE.replace("dynamic:warehouse_rw", "dynamic:warehouse_ro"),
                 "pipelines.loader.connections.warehouse", "names no [credentials.*]",
                 id="unknown-definition"),
    pytest.param('[credentials.v]\ntype = "vault_database"\nbackend = "local"\nrole = "r"\n'
                 'connection = "c/x"\n', "credentials.v.backend", "not a vault backend",
                 id="vault-backend-not-vault"),
    pytest.param(PG.replace("connections/warehouse_admin", "shared/warehouse_admin"),
                 "credentials.warehouse_rw.admin", "under shared/", id="admin-in-shared"),
    pytest.param(PG + PIPE.replace('scope = "loader"',
                                   'scope = "loader"\ngrants = ["connections"]'),
                 "credentials.warehouse_rw.admin", "readable by pipeline 'loader'",
                 id="admin-granted-to-a-pipeline"),
    pytest.param(PG + PIPE.replace("}", ', admin = "connections/warehouse_admin_{env}" }'),
                 "credentials.warehouse_rw.admin", "readable by pipeline 'loader'",
                 id="admin-mapped-as-a-connection"),
    pytest.param(PG.replace("connections/warehouse_admin", "loader/admin") + PIPE,
                 "credentials.warehouse_rw.admin", "readable by pipeline 'loader'",
                 id="admin-in-a-pipelines-scope"),
])
def test_bad_definitions_are_one_line_naming_the_field(isolated: Path, text: str, where: str,
                                                       says: str) -> None:
    """Each mistake is one ManifestError line naming credentials.NAME.field (or the pipeline's
    connection)."""
    with pytest.raises(ManifestError) as info:
        load(isolated, text)
    message = str(info.value)
    assert f": {where}: " in message and says in message and "\n" not in message


def test_the_test_only_knob_lowers_the_minimum_ttl(isolated: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """PIPEKEY_TESTING_MIN_TTL lowers the minimum so a test can watch a login expire."""
    monkeypatch.setenv(MIN_TTL_ENV, "2")
    manifest = load(isolated, PG.replace("ttl = 600", "ttl = 2"))
    assert manifest.credentials["warehouse_rw"].ttl == 2  # type: ignore[attr-defined]


def test_a_lease_repr_never_shows_the_password() -> None:
    """repr/str of a Lease show the login and mask the password."""
    conn = Connection(conn_type="postgres", host="127.0.0.1", port=5432, login="lk_x",
                      password="fake-minted-pw-acct42", schema="analytics")
    lease = Lease("warehouse_rw", "lk_x", conn, 0.0)
    for shown in (repr(lease), str(lease), f"{lease!r}", ascii(lease)):
        assert "fake-minted-pw-acct42" not in shown and "lk_x" in shown
