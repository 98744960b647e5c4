"""``type = "vault_database"``: a login per run from Vault's database secrets engine, through
hvac against the protocol-level Vault, which runs the role's SQL on a real PostgreSQL on
127.0.0.1: mint gives a working login with the role's grants only, renewal keeps a run alive
past its lease, revoke drops the login, errors are one scrubbed line, nothing leaks."""

from __future__ import annotations

import glob
import logging
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import pipekey
from pipekey.backends.vault import VaultLogin
from pipekey.credentials import Lease, build_minter
from pipekey.credentials.base import MIN_TTL_ENV, VaultDatabaseConfig
from pipekey.credentials.vault_database import VaultDatabaseMinter, vault_said
from pipekey.errors import CredentialError

from ..extras import need
from ..fakes.vault import ROLE_ID, ROOT_TOKEN, SECRET_ID, FakeVault

need("vault")
psycopg2 = need("postgres")

ADMIN, ADMIN_PASSWORD = "lkv_admin", "fake-vault-admin-pw-acct42"
WRITER = "lkv_writer"          # the role whose grants a minted login gets
DOCS = (Path(__file__).resolve().parents[2] / "docs" / "credentials.md").read_text()
VAULT_DOCS = DOCS[DOCS.index("## The Vault variant"):]
#: the creation statement docs/credentials.md tells operators to give Vault, for our writer
CREATE = [re.search(r'creation_statements="(.*?)" \\', VAULT_DOCS).group(1)
          .replace('\\"', '"').replace("etl_writer", WRITER)]


def superuser(postgres: dict) -> Any:
    """A superuser session over the cluster's Unix socket (local connections are trusted)."""
    found = glob.glob(f"{tempfile.gettempdir()}/pipekey-pg-*/.s.PGSQL.{postgres['port']}")
    assert found, "the postgres fixture's socket was not found"
    conn = psycopg2.connect(host=str(Path(found[0]).parent), port=postgres["port"],
                            user="postgres", dbname=postgres["dbname"])
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def warehouse(postgres: dict) -> Iterator[dict]:
    """An admin Vault logs in as (CREATEROLE), a writer role with grants on one table, and a
    table only the admin's side can read."""
    with superuser(postgres) as conn, conn.cursor() as cur:
        for sql in (f"CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}'",
                    f"CREATE ROLE {WRITER} NOLOGIN",
                    "CREATE TABLE IF NOT EXISTS lkv_events (id int)",
                    "CREATE TABLE IF NOT EXISTS lkv_admin_only (id int)",
                    f"GRANT SELECT, INSERT ON lkv_events TO {WRITER}",
                    f"GRANT SELECT ON lkv_admin_only TO {ADMIN} WITH GRANT OPTION"):
            try:
                cur.execute(sql)
            except psycopg2.errors.DuplicateObject:
                pass
    yield postgres


@pytest.fixture
def vault_db(warehouse: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVault]:
    """A fake Vault of its own with the database engine configured for the warehouse: role
    ``etl`` (lease 60 s), ``short`` (lease 3 s, max 60 s), ``capped`` (lease 3 s, max 4 s)."""
    hvac = need("vault")
    server = FakeVault()
    root = hvac.Client(url=server.url, token=ROOT_TOKEN)
    root.secrets.database.configure(
        name="warehouse", plugin_name="postgresql-database-plugin", allowed_roles=["*"],
        connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:"
                       f"{warehouse['port']}/{warehouse['dbname']}",
        username=ADMIN, password=ADMIN_PASSWORD)
    for role, ttl, max_ttl in (("etl", 60, 3600), ("short", 3, 60), ("capped", 3, 4)):
        root.secrets.database.create_role(name=role, db_name="warehouse",
                                          creation_statements=CREATE, default_ttl=ttl,
                                          max_ttl=max_ttl)
    monkeypatch.setenv("VAULT_SECRET_ID", SECRET_ID)
    monkeypatch.setenv(MIN_TTL_ENV, "1")  # leases of seconds, so renewal shows in a test
    monkeypatch.setenv("PIPEKEY__CONNECTIONS__WAREHOUSE_BASE",
                       f"postgres://127.0.0.1:{warehouse['port']}/{warehouse['dbname']}"
                       "?sslmode=disable")
    Path("pipekey.toml").write_text(f"""
chain = ["env", "vault"]
[backends.env]
type = "env"
[backends.vault]
type = "vault"
url = "{server.url}"
prefix = "lkv"
auth = {{ method = "approle", role_id = "{ROLE_ID}" }}
""")
    VaultLogin._all.clear()
    try:
        yield server
    finally:
        VaultLogin._all.clear()
        server.stop()


def minter(**fields: Any) -> VaultDatabaseMinter:
    fields = {"type": "vault_database", "backend": "vault", "role": "etl",
              "connection": "connections/warehouse_base", **fields}
    lk = pipekey.load()
    return VaultDatabaseMinter("warehouse_vault", VaultDatabaseConfig(**fields), lk, lk.env)


def connect(lease: Lease) -> Any:
    c = lease.connection
    return psycopg2.connect(host=c.host, port=c.port, dbname=c.schema, user=c.login,
                            password=c.password, connect_timeout=5)


def can_connect(lease: Any) -> bool:
    try:
        connect(lease).close()
    except psycopg2.OperationalError:
        return False
    return True


def role_exists(postgres: dict, name: str) -> bool:
    with superuser(postgres) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        return cur.fetchone() is not None


def test_mint_gives_a_working_login_with_the_roles_grants_only(vault_db, warehouse) -> None:
    """The minted login connects, writes where the Vault role's grants allow, and cannot
    read what only the admin can."""
    m = minter()
    lease = m.mint("loader", "run-1")
    try:
        assert lease.definition == "warehouse_vault" and lease.login.startswith("v-approle-etl-")
        assert lease.connection.host == "127.0.0.1" and lease.connection.schema == "analytics"
        assert lease.connection.extra == {"sslmode": "disable"}
        assert lease.lease_id in vault_db.leases and lease.expires_at > time.time() + 50
        with connect(lease) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO lkv_events VALUES (1)")
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == lease.login
        with connect(lease) as conn, conn.cursor() as cur, \
                pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT * FROM lkv_admin_only")
    finally:
        m.revoke(lease)
        m.close()


def test_two_concurrent_runs_get_two_logins(vault_db, warehouse) -> None:
    """Runs minting at the same moment get distinct logins, each working."""
    m = minter()
    leases: list[Any] = []
    threads = [threading.Thread(target=lambda i=i: leases.append(m.mint("loader", f"run-{i}")))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert len(leases) == 2 and leases[0].login != leases[1].login
        assert leases[0].lease_id != leases[1].lease_id
        assert all(can_connect(lease) for lease in leases)
    finally:
        for lease in leases:
            m.revoke(lease)
        m.close()


def test_revoke_drops_the_login(vault_db, warehouse) -> None:
    """After revoke, the login cannot connect, its role is gone, and Vault saw the revoke of
    exactly that lease; a second revoke is a success."""
    m = minter()
    lease = m.mint("loader", "run-1")
    assert can_connect(lease) and role_exists(warehouse, lease.login)
    m.revoke(lease)
    assert not can_connect(lease)
    assert not role_exists(warehouse, lease.login)
    assert vault_db.revoked == [lease.lease_id]
    m.revoke(lease)  # already gone: Vault answers 204
    assert vault_db.revoked == [lease.lease_id]
    m.close()


def test_a_revocation_vault_fails_for_a_moment_is_tried_again(vault_db, warehouse) -> None:
    """A revocation Vault answers with 500 (its database plugin's statements failed, as
    concurrent REVOKEs on one schema make them fail) is tried again, bounded: the lease is
    revoked and the login dropped at close, not left live until its TTL."""
    m = minter()
    lease = m.mint("loader", "run-1")
    vault_db.failing_revocations = 2
    m.revoke(lease)
    assert vault_db.revoked == [lease.lease_id] and vault_db.failing_revocations == 0
    assert not role_exists(warehouse, lease.login)
    vault_db.failing_revocations = 10  # a database that stays broken: the error is said
    other = m.mint("loader", "run-2")
    with pytest.raises(CredentialError, match="revoke"):
        m.revoke(other)
    m.close()


def test_a_run_longer_than_its_lease_is_renewed(vault_db, warehouse) -> None:
    """A 3 s lease held for 5 s is renewed by the timer: the login still works and the fake
    saw renewals of that lease; after revoke the timer stops."""
    m = minter(role="short", ttl=3)
    lease = m.mint("loader", "run-long")
    try:
        time.sleep(5)
        assert vault_db.renewed.count(lease.lease_id) >= 2
        assert can_connect(lease) and role_exists(warehouse, lease.login)
    finally:
        m.revoke(lease)
        m.close()
    renewals = len(vault_db.renewed)
    time.sleep(2.5)
    assert len(vault_db.renewed) == renewals and not can_connect(lease)


def test_without_renewal_the_lease_expires_and_vault_drops_the_login(vault_db,
                                                                   warehouse) -> None:
    """A process that stops renewing (killed): Vault revokes the lease at its TTL and the
    login is dropped; sweep has nothing to do."""
    m = minter(role="short")
    lease = m.mint("loader", "run-killed")
    m.close()  # what SIGKILL does to the timer
    deadline = time.monotonic() + 10
    while role_exists(warehouse, lease.login) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not role_exists(warehouse, lease.login) and not can_connect(lease)
    assert vault_db.revoked == [lease.lease_id] and m.sweep() == []


def test_renewal_capped_by_max_ttl_stops_with_a_warning(vault_db, caplog) -> None:
    """When Vault caps a renewal at the role's max_ttl, the timer says so once and stops."""
    m = minter(role="capped", ttl=3)
    lease = m.mint("loader", "run-capped")
    try:
        deadline = time.monotonic() + 6
        while "max_ttl" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "credential 'warehouse_vault': Vault capped the lease of run 'run-capped'" \
            in caplog.text
        assert vault_db.renewed == [lease.lease_id]
    finally:
        m.revoke(lease)
        m.close()


@pytest.mark.parametrize(("role", "denied", "said"), [
    pytest.param("nosuch", False, "credential 'warehouse_vault': mint for role 'nosuch' at "
                 "'database': Vault (backend 'vault') said: unknown role: nosuch",
                 id="unknown-role"),
    pytest.param("locked", True, "credential 'warehouse_vault': mint for role 'locked' at "
                 "'database' denied (403): Vault (backend 'vault') said: permission denied",
                 id="permission-denied"),
])
def test_vault_errors_are_one_line_naming_the_definition(vault_db, role, denied,
                                                         said) -> None:
    """Vault's refusal is one line naming the definition, the role and what Vault said, and
    no lease is left behind."""
    if denied:
        vault_db.deny(f"database/creds/{role}")
    with pytest.raises(CredentialError) as caught:
        minter(role=role).mint("loader", "run-1")
    assert str(caught.value) == said
    assert vault_db.leases == {}


def test_a_database_error_is_scrubbed(vault_db) -> None:
    """A creation statement PostgreSQL refuses: one line with PostgreSQL's words, no lease."""
    hvac = need("vault")
    root = hvac.Client(url=vault_db.url, token=ROOT_TOKEN)
    root.secrets.database.create_role(name="broken", db_name="warehouse", creation_statements=[
        "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' IN ROLE lkv_nosuch_role;"])
    with pytest.raises(CredentialError) as caught:
        minter(role="broken").mint("loader", "run-1")
    message = str(caught.value)
    assert "\n" not in message and 'role "lkv_nosuch_role" does not exist' in message
    assert "credential 'warehouse_vault'" in message and "fake-dbpw-" not in message
    assert vault_db.leases == {}


def test_vault_said_masks_registered_values() -> None:
    """What Vault said passes through the redactor and becomes one line."""
    hvac = need("vault")
    pipekey.redact.register("fake-token-acct42-said")
    exc = hvac.exceptions.InvalidRequest(
        errors=["1 error occurred:\n\t* bad fake-token-acct42-said\n\n"])
    assert vault_said(exc) == "bad ***"


def test_leak_hunt(vault_db, warehouse, caplog, capfd, tmp_path) -> None:
    """No password, lease id or admin password in logs, errors, reprs or audit records."""
    caplog.set_level(logging.DEBUG)
    Path("pipekey.toml").write_text(Path("pipekey.toml").read_text().replace(
        'chain = ["env", "vault"]', 'chain = ["env", "vault"]\n[audit]\nsinks = [{ type = "file", '
        f'path = "{tmp_path}/audit.jsonl" }}]'))
    m = minter(role="short", ttl=3)
    lease = m.mint("loader", "run-leak")
    time.sleep(2.5)  # one renewal, audited
    logging.getLogger("test").warning("the lease: %r %s %s", lease, lease.connection,
                                      lease.lease_id)
    m.revoke(lease)
    m.close()
    with pytest.raises(CredentialError) as caught:
        minter(role="nosuch").mint("loader", "run-leak")
    assert vault_db.renewed
    out, err = capfd.readouterr()
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"event": "renew"' in audit and "dynamic:warehouse_vault" in audit
    shown = "\n".join([out, err, caplog.text, audit, str(caught.value), repr(m), repr(lease),
                       repr(lease.connection)])
    secrets = [lease.connection.password, lease.lease_id, ADMIN_PASSWORD,
               lease.lease_id.rpartition("/")[2]]
    for secret in secrets:
        assert secret and secret not in shown, "a secret leaked"
    assert str(uuid.UUID(lease.lease_id.rpartition("/")[2]))


def test_the_docs_example_mints_through_the_manifest(vault_db, warehouse,
                                                     monkeypatch) -> None:
    """docs/credentials.md's manifest (pointed at the fake) and its role's creation statement
    give a run a working login through build_minter; repr(lease) shows no lease id."""
    manifest = re.search(r"```toml\n(.*?)```", VAULT_DOCS, flags=re.S).group(1)
    fake = vault_db.url
    Path("pipekey.toml").write_text(manifest.replace("https://vault.example.com:8200", fake)
                                     .replace("etl-role-id", ROLE_ID)
                                     .replace('role = "etl-writer"', 'role = "etl"'))
    monkeypatch.setenv("PIPEKEY__CONNECTIONS__WAREHOUSE_BASE_DEV", "postgres://127.0.0.1:"
                       f"{warehouse['port']}/{warehouse['dbname']}")
    lk = pipekey.load()
    m = build_minter("warehouse_vault", lk.manifest.credentials["warehouse_vault"], lk,
                     lk.env)
    assert m.reads == ["connections/warehouse_base_dev"]
    lease = m.mint("loader", "run-docs")
    try:
        assert can_connect(lease) and lease.lease_id not in repr(lease)
    finally:
        m.revoke(lease)
        m.close()
    assert not can_connect(lease)


# -- through runs ---------------------------------------------------------------------------
def run_manifest(server: FakeVault, tmp_path: Path, **roles: str) -> None:
    """A manifest whose pipeline ``loader`` maps each connection to a vault_database
    definition of the same name using the given Vault role; audit to a file."""
    definitions = "".join(f"""
[credentials.{name}]
type = "vault_database"
backend = "vault"
role = "{role}"
connection = "connections/warehouse_base"
""" for name, role in roles.items())
    mapped = ", ".join(f'{name} = "dynamic:{name}"' for name in roles)
    Path("pipekey.toml").write_text(f"""
chain = ["env", "vault"]
[audit]
sinks = [{{ type = "file", path = "{tmp_path}/audit.jsonl" }}]
[backends.env]
type = "env"
[backends.vault]
type = "vault"
url = "{server.url}"
prefix = "lkv"
auth = {{ method = "approle", role_id = "{ROLE_ID}" }}
{definitions}
[pipelines.loader]
scope = "etl/loader"
connections = {{ {mapped} }}
""")


def test_a_run_gets_a_working_login_and_close_revokes_it(vault_db, warehouse,
                                                        tmp_path) -> None:
    """``dynamic:NAME`` gives the run a login of its own; when the run ends (a failed one
    too) Vault saw the revoke of that lease, the login cannot connect and its role is gone."""
    run_manifest(vault_db, tmp_path, warehouse="etl")
    lk = pipekey.load()
    with lk.pipeline("loader") as run:
        conn = run.connection("warehouse")
        lease = run.lease("warehouse")
        assert conn.login == lease.login and conn.conn_id == "warehouse"
        assert can_connect(lease)
    assert vault_db.revoked == [lease.lease_id]
    assert not can_connect(lease) and not role_exists(warehouse, lease.login)
    with pytest.raises(RuntimeError), lk.pipeline("loader") as run:
        failed = run.lease("warehouse")
        raise RuntimeError("the pipeline failed")
    assert vault_db.revoked == [lease.lease_id, failed.lease_id]
    assert not role_exists(warehouse, failed.login)
    lk.close()


def test_two_concurrent_runs_get_two_logins_through_runs(vault_db, warehouse,
                                                         tmp_path) -> None:
    """Two runs open at once: two logins, both working while both are open."""
    run_manifest(vault_db, tmp_path, warehouse="etl")
    lk = pipekey.load()
    both = threading.Barrier(2, timeout=30)
    seen: dict[str, tuple[str, bool]] = {}

    def one(i: int) -> None:
        with lk.pipeline("loader", run_name=f"run-{i}") as run:
            lease = run.lease("warehouse")
            both.wait()
            seen[run.name] = (lease.login, can_connect(lease))
            both.wait()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(seen) == 2 and len({login for login, _ in seen.values()}) == 2
    assert all(ok for _, ok in seen.values())
    assert len(vault_db.revoked) == 2
    assert not any(le["state"] == "live" for le in vault_db.leases.values())
    lk.close()


def test_a_vault_error_keeps_the_run_closed_and_leaves_nothing(vault_db, warehouse,
                                                               tmp_path) -> None:
    """A run whose second definition names an unknown Vault role does not open: one line
    naming that definition and what Vault said; the first login was revoked already."""
    run_manifest(vault_db, tmp_path, warehouse="etl", reports="nosuch")
    lk = pipekey.load()
    with pytest.raises(CredentialError) as caught:
        with lk.pipeline("loader"):
            pytest.fail("the run opened")
    assert str(caught.value) == ("credential 'reports': mint for role 'nosuch' at 'database': "
                                 "Vault (backend 'vault') said: unknown role: nosuch")
    (minted,) = vault_db.leases.values()
    assert minted["state"] == "revoked" and not role_exists(warehouse, minted["username"])
    lk.close()


def test_leak_hunt_through_a_run(vault_db, warehouse, tmp_path, caplog, capfd) -> None:
    """Through a run: mint, renew, revoke and their audit records show logins, never the
    password, the lease id or the admin's password."""
    caplog.set_level(logging.DEBUG)
    run_manifest(vault_db, tmp_path, warehouse="short")
    lk = pipekey.load()
    with lk.pipeline("loader") as run:
        lease = run.lease("warehouse")
        conn = run.connection("warehouse")
        logging.getLogger("pipeline").info("connected with %r %s %s", conn, conn.to_uri(),
                                           lease.lease_id)
        print(conn.password, lease.lease_id)  # a careless pipeline's output stays ours
        run.renew("warehouse")
        time.sleep(2.5)  # and one by the timer
    lk.close()
    assert vault_db.renewed.count(lease.lease_id) >= 2
    audit = (tmp_path / "audit.jsonl").read_text()
    for event in ("mint", "renew", "revoke"):
        assert f'"event": "{event}"' in audit
    assert lease.login in audit
    out, err = capfd.readouterr()
    logged = "\n".join([err, caplog.text, audit, repr(lease)])
    for secret in (lease.connection.password, lease.lease_id, ADMIN_PASSWORD):
        assert secret not in logged
    assert (tmp_path / "audit.jsonl").read_text().count(lease.lease_id) == 0
    assert lease.connection.password in out  # print() is the pipeline's own business


def test_pipekey_run_hands_the_child_a_working_login_then_revokes(vault_db, warehouse,
                                                                   tmp_path) -> None:
    """``pipekey run``: the child connects with AIRFLOW_CONN_WAREHOUSE (its own login); the
    password it prints is masked in the output; the lease is revoked when the child exits;
    ``pipekey credentials sweep`` has nothing to drop for this type; ``check --connect``
    mints, connects and revokes."""
    import json

    from ..conftest import run_cli

    run_manifest(vault_db, tmp_path, warehouse="etl")
    child = ("import os, psycopg2; from pipekey import Connection; "
             "c = Connection.from_uri(os.environ['AIRFLOW_CONN_WAREHOUSE']); "
             "db = psycopg2.connect(host=c.host, port=c.port, dbname=c.schema, user=c.login, "
             "password=c.password); cur = db.cursor(); cur.execute('SELECT current_user'); "
             "print('connected as', cur.fetchone()[0]); print('password', c.password)")
    result = run_cli("run", "--pipeline", "loader", "--", "python", "-c", child)
    assert result.returncode == 0, result.stderr[-2000:]
    (lease_id, lease), = vault_db.leases.items()
    assert f"connected as {lease['username']}" in result.stdout
    assert "password ***" in result.stdout and "fake-dbpw-" not in result.stdout + result.stderr
    assert vault_db.revoked == [lease_id] and not role_exists(warehouse, lease["username"])
    assert lease_id not in result.stdout + result.stderr
    swept = run_cli("credentials", "sweep", "--json")
    assert swept.returncode == 0 and '"swept": []' in swept.stdout
    checked = run_cli("check", "--connect", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    items = {f["item"]: f for f in json.loads(checked.stdout)["findings"]}
    assert items["connection:warehouse (connect)"]["status"] == "ok"
    assert items["credential:warehouse"]["status"] == "ok"
    assert len(vault_db.revoked) == 2 == len(vault_db.leases)
    assert "fake-dbpw-" not in checked.stdout + checked.stderr


def test_without_hvac_building_the_minter_says_what_to_install(vault_db, tmp_path,
                                                               monkeypatch) -> None:
    """A vault_database definition without hvac installed: MissingDependency with the pip
    line, when the minter is built (before any run mints)."""
    import sys

    from pipekey.errors import MissingDependency

    run_manifest(vault_db, tmp_path, warehouse="etl")
    lk = pipekey.load()
    monkeypatch.setitem(sys.modules, "hvac", None)
    with pytest.raises(MissingDependency, match=r"credentials of type vault_database needs an "
                       r"optional dependency: pip install 'pipekey\[vault\]'"):
        lk.minter("warehouse")


def test_bench_fifty_runs_opening_at_once_each_get_a_login(vault_db, warehouse,
                                                           tmp_path) -> None:
    """`pipekey bench --credentials NAME`: 50 runs open at once through Vault, 50 distinct
    logins, time to ready printed, every lease revoked and every login dropped after."""
    import json

    from ..conftest import run_cli

    run_manifest(vault_db, tmp_path, warehouse="etl")
    done = run_cli("bench", "--credentials", "warehouse", "--runs", "50", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    print("vault_database, 50 runs at once:", json.dumps(result["ready"]))
    assert result["logins"] == 50 and result["ready"]["runs"] == 50
    assert len(vault_db.leases) == 50 and len(vault_db.revoked) == 50, done.stderr[-3000:]
    assert not any(role_exists(warehouse, le["username"]) for le in vault_db.leases.values())
