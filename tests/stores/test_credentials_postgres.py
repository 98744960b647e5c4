"""``type = "postgres_role"`` against a real PostgreSQL: a login minted per run, dropped at
close, expiring by itself when the process is killed, swept only if pipekey made it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

import pipekey
from pipekey import Connection
from pipekey.credentials.base import MIN_TTL_ENV
from pipekey.credentials.postgres import MARKER, role_name
from pipekey.errors import CredentialError

from ..conftest import run_cli
from ..extras import need

psycopg2 = need("postgres")

ADMIN_PASSWORD = "fake-admin-pw-acct42"
WRITER = "lkt_etl_writer"
ADMIN = "lkt_admin"
OURS = MARKER + "; definition=warehouse_rw; "  # how this definition's run logins are marked

MANIFEST = """
chain = ["local"]
[backends.local]
type = "local"
[audit]
sinks = [{{ type = "file", path = ".pipekey/audit.jsonl" }}]

[credentials.warehouse_rw]
type = "postgres_role"
admin = "connections/warehouse_admin"
member_of = [{member_of}]
ttl = {ttl}
{more}

[pipelines.loader]
scope = "loader"
connections = {{ warehouse = "dynamic:warehouse_rw" }}
"""


def superuser(pg: dict[str, Any]) -> Any:
    db = psycopg2.connect(host=pg["socket_dir"], port=pg["port"], user="postgres",
                          dbname="analytics", connect_timeout=10)
    db.autocommit = True
    return db


@pytest.fixture(scope="module")
def roles(postgres: dict[str, Any]) -> dict[str, Any]:
    return setup_roles(postgres)


def setup_roles(postgres: dict[str, Any]) -> dict[str, Any]:
    """An admin role with the least privilege it needs (CREATEROLE, pg_signal_backend), a
    group role etl_writer with grants on one table, and a table only the admin may read
    (once per cluster)."""
    db = superuser(postgres)
    with db.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ADMIN,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD %s", (ADMIN_PASSWORD,))
            cur.execute(f"GRANT pg_signal_backend TO {ADMIN}")
            cur.execute(f"CREATE ROLE {WRITER} NOLOGIN")
            cur.execute("CREATE SCHEMA lkt AUTHORIZATION postgres")
            cur.execute("CREATE TABLE lkt.events (id serial PRIMARY KEY, note text)")
            cur.execute("CREATE TABLE lkt.admin_only (note text)")
            cur.execute(f"GRANT USAGE ON SCHEMA lkt TO {WRITER}, {ADMIN}")
            cur.execute(f"GRANT SELECT, INSERT ON lkt.events TO {WRITER}")
            cur.execute(f"GRANT USAGE ON SEQUENCE lkt.events_id_seq TO {WRITER}")
            cur.execute(f"GRANT SELECT ON lkt.admin_only TO {ADMIN}")
    db.close()
    return postgres


def run_roles(pg: dict[str, Any]) -> list[str]:
    """Every role pipekey's runs made that still exists."""
    db = superuser(pg)
    with db.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'lk\\_%' ORDER BY 1")
        found = [r[0] for r in cur.fetchall()]
    db.close()
    return found


def admin_uri(pg: dict[str, Any], login: str = ADMIN, password: str = ADMIN_PASSWORD) -> str:
    return Connection(conn_type="postgres", host="127.0.0.1", port=pg["port"], login=login,
                      password=password, schema="analytics").to_uri()


def make_world(tmp: Path, pg: dict[str, Any], *, ttl: int = 600, member_of: str = f'"{WRITER}"',
               more: str = "", admin: str | None = None) -> pipekey.Pipekey:
    (tmp / "pipekey.toml").write_text(MANIFEST.format(ttl=ttl, member_of=member_of, more=more))
    lk = pipekey.load(tmp / "pipekey.toml")
    lk.set("connections/warehouse_admin", admin or admin_uri(pg))
    return lk


@pytest.fixture
def world(isolated: Path, master_key: str, roles: dict[str, Any]) -> Iterator[pipekey.Pipekey]:
    lk = make_world(isolated, roles)
    yield lk
    lk.close()


def connect(conn: Connection) -> Any:
    return psycopg2.connect(host=conn.host, port=conn.port, user=conn.login,
                            password=conn.password, dbname=conn.schema, connect_timeout=10)


def test_a_runs_login_has_the_groups_grants_and_nothing_of_the_admins(
        world: pipekey.Pipekey, roles: dict[str, Any]) -> None:
    """The minted login writes with etl_writer's grants, cannot read the admin's table or
    create roles; after close it cannot connect and its role is gone."""
    with world.pipeline("loader", run_name="nightly-2026-12-01") as run:
        conn = run.connection("warehouse")
        assert conn.login.startswith("lk_loader_nightly_2026_12_01_")
        assert conn.password and ADMIN_PASSWORD not in repr(conn)
        assert (conn.host, conn.port, conn.schema) == ("127.0.0.1", roles["port"], "analytics")
        db = connect(conn)
        with db, db.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == conn.login
            cur.execute("INSERT INTO lkt.events (note) VALUES ('from the run')")
        for forbidden in ("SELECT * FROM lkt.admin_only", "CREATE ROLE lkt_not_allowed"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), db, db.cursor() as cur:
                cur.execute(forbidden)
        db.close()
        assert conn.login in run_roles(roles)
        with pytest.raises(pipekey.AccessDenied):  # the admin connection is not the run's
            run.get("connections/warehouse_admin")
    assert conn.login not in run_roles(roles)
    with pytest.raises(psycopg2.OperationalError):
        connect(conn)


def test_close_ends_the_logins_open_sessions(world: pipekey.Pipekey,
                                             roles: dict[str, Any]) -> None:
    """A session still open at close is terminated, then the role dropped."""
    with world.pipeline("loader") as run:
        db = connect(run.connection("warehouse"))
    with pytest.raises(psycopg2.Error), db.cursor() as cur:
        cur.execute("SELECT 1")
    db.close()
    assert run_roles(roles) == []


def test_a_failed_run_still_drops_its_login(world: pipekey.Pipekey,
                                            roles: dict[str, Any]) -> None:
    """An exception in the run's block does not leave the login behind."""
    with pytest.raises(RuntimeError), world.pipeline("loader") as run:
        login = run.connection("warehouse").login
        raise RuntimeError("the pipeline failed")
    assert login not in run_roles(roles)


def test_two_concurrent_runs_get_two_logins(world: pipekey.Pipekey,
                                            roles: dict[str, Any]) -> None:
    """Runs of one pipeline open at the same time each get their own login."""
    with world.pipeline("loader") as a, world.pipeline("loader") as b:
        logins = {a.connection("warehouse").login, b.connection("warehouse").login}
        assert len(logins) == 2 and set(run_roles(roles)) == logins
        for run in (a, b):
            connect(run.connection("warehouse")).close()
    assert run_roles(roles) == []


def test_role_names_fit_postgres_and_say_pipeline_and_run() -> None:
    """Role names stay within 63 bytes, keep the pipeline and the run id's tail, differ."""
    long = role_name("lk_", "a_pipeline_with_a_very_long_name_indeed", "scheduled__2026-12-01T00"
                     ":00:00+00:00__manual_" + "x" * 80 + "_tail")
    assert len(long.encode()) <= 63 and long.startswith("lk_a_pipeline_with_a_ve_")
    assert "_tail_" in long
    assert role_name("lk_", "p", "r") != role_name("lk_", "p", "r")


def test_mint_and_revoke_are_audited_without_values(world: pipekey.Pipekey,
                                                    isolated: Path) -> None:
    """The audit file has a mint and a revoke naming the login, never a password."""
    with world.pipeline("loader") as run:
        conn = run.connection("warehouse")
    text = (isolated / ".pipekey" / "audit.jsonl").read_text()
    events = [json.loads(line) for line in text.splitlines()]
    mine = [e for e in events if e["key"] == "dynamic:warehouse_rw"]
    assert [(e["event"], e["outcome"]) for e in mine] == [("mint", "ok"), ("revoke", "ok")]
    # the audit file goes through the process's masker: a value an earlier test registered
    # (test_copy's "loader@..." e-mail) may mask part of the login, never the other way round
    shown = pipekey.redact.redactor().redact(conn.login)
    assert all(shown in e["detail"] for e in mine)
    assert conn.password not in text and ADMIN_PASSWORD not in text
    metrics = pipekey.metrics.snapshot()
    assert any(k.startswith("credential_mint_seconds") for k in metrics["histograms"])


@pytest.mark.parametrize("case, says", [
    pytest.param("not-createrole", "permission denied to create role", id="admin-cannot-create"),
    pytest.param("no-such-role", 'role "lkt_no_such_group" does not exist', id="member-missing"),
    pytest.param("wrong-password", "password authentication failed", id="admin-bad-password"),
])
def test_bad_input_is_one_line_and_leaves_nothing(isolated: Path, master_key: str,
                                                  roles: dict[str, Any], case: str,
                                                  says: str) -> None:
    """An admin that cannot create roles, a member_of role that does not exist, a wrong admin
    password: one line naming the definition and what PostgreSQL said; no run, no role."""
    admin = {"not-createrole": admin_uri(roles, "loader", roles["password"]),
             "wrong-password": admin_uri(roles, password="fake-wrong-admin-pw")}.get(case)
    member_of = '"lkt_no_such_group"' if case == "no-such-role" else f'"{WRITER}"'
    lk = make_world(isolated, roles, member_of=f'"{WRITER}", {member_of}'
                    if case == "no-such-role" else member_of, admin=admin)
    run = lk.pipeline("loader")
    with pytest.raises(CredentialError) as info:
        run.open()
    message = str(info.value)
    assert message.startswith("credential 'warehouse_rw': ") and says in message
    assert "\n" not in message
    for value in (ADMIN_PASSWORD, roles["password"], "fake-wrong-admin-pw"):
        assert value not in message and value not in repr(info.value)
    with pytest.raises(pipekey.UsageError):
        run.connection("warehouse")
    assert run_roles(roles) == []
    lk.close()


def test_sweep_drops_only_expired_pipekey_roles(isolated: Path, master_key: str,
                                                 roles: dict[str, Any]) -> None:
    """sweep drops a run's expired role; a role with the prefix but no marker, one with the
    marker but not the prefix, and a live run's role all survive."""
    db = superuser(roles)
    with db.cursor() as cur:
        cur.execute("CREATE ROLE lk_handmade LOGIN VALID UNTIL '2000-01-01'")
        cur.execute("CREATE ROLE someone_else LOGIN VALID UNTIL '2000-01-01'")
        cur.execute("COMMENT ON ROLE someone_else IS %s", (MARKER + "; forged",))
        cur.execute("CREATE ROLE lk_expired_run LOGIN VALID UNTIL '2000-01-01'")
        cur.execute("COMMENT ON ROLE lk_expired_run IS %s", (OURS + "run=x",))
    lk = make_world(isolated, roles)
    try:
        with lk.pipeline("loader") as live:
            live_login = live.connection("warehouse").login
            dry = run_cli("credentials", "sweep", "--dry-run", "--json")
            assert dry.returncode == 0, dry.stderr
            assert [r["login"] for r in json.loads(dry.stdout)["swept"]] == ["lk_expired_run"]
            assert "lk_expired_run" in run_roles(roles)
            done = run_cli("credentials", "sweep", "--json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["swept"] == [
                {"definition": "warehouse_rw", "login": "lk_expired_run", "action": "dropped"}]
            assert set(run_roles(roles)) == {"lk_handmade", live_login}
            audit = [json.loads(line) for line in
                     (isolated / ".pipekey" / "audit.jsonl").read_text().splitlines()]
            assert [(e["event"], e["detail"]) for e in audit if e["event"] == "sweep"] == [
                ("sweep", "login lk_expired_run")]
        with db.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = 'someone_else'")
            assert cur.fetchone() is not None
    finally:
        with db.cursor() as cur:
            cur.execute("DROP ROLE IF EXISTS lk_handmade, someone_else, lk_expired_run")
        db.close()
        lk.close()
    assert run_roles(roles) == []


def test_sweep_on_open_drops_expired_roles_first(isolated: Path, master_key: str,
                                                 roles: dict[str, Any]) -> None:
    """With sweep_on_open, opening a run drops expired pipekey roles."""
    db = superuser(roles)
    with db.cursor() as cur:
        cur.execute("CREATE ROLE lk_left_behind LOGIN VALID UNTIL '2000-01-01'")
        cur.execute("COMMENT ON ROLE lk_left_behind IS %s", (OURS + "run=x",))
    db.close()
    lk = make_world(isolated, roles, more="sweep_on_open = true")
    with lk.pipeline("loader") as run:
        assert run_roles(roles) == [run.connection("warehouse").login]
    lk.close()
    assert run_roles(roles) == []


CHILD = """
import sys, time, pipekey
lk = pipekey.load()
with lk.pipeline("loader", run_name="killed") as run:
    conn = run.connection("warehouse")
    print(conn.login, flush=True)
    sys.stdout.write(conn.password + "\\n")  # the parent needs it; written to a pipe only
    sys.stdout.flush()
    time.sleep(600)
"""


def test_a_killed_process_leaves_a_login_that_expires_and_sweep_removes_it(
        isolated: Path, master_key: str, roles: dict[str, Any]) -> None:
    """SIGKILL a child holding a run: its login works until ttl, then stops; sweep drops
    the role. (ttl = 3 s through the test-only PIPEKEY_TESTING_MIN_TTL knob.)"""
    os.environ[MIN_TTL_ENV] = "3"
    try:
        make_world(isolated, roles, ttl=3).close()
        with subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=dict(os.environ)) as child:
            try:
                assert child.stdout is not None
                login = child.stdout.readline().strip()
                password = child.stdout.readline().strip()
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
        assert login.startswith("lk_loader_killed_"), "the child did not open its run"
        minted = Connection(host="127.0.0.1", port=roles["port"], login=login,
                            password=password, schema="analytics")
        assert login in run_roles(roles)  # nobody dropped it: the process died
        deadline = time.monotonic() + 15
        while True:  # works until VALID UNTIL passes, then never again
            try:
                connect(minted).close()
            except psycopg2.OperationalError as exc:
                assert "password authentication failed" in str(exc)
                break
            assert time.monotonic() < deadline, "the login did not expire"
            time.sleep(0.5)
        done = run_cli("credentials", "sweep", "--json")
        assert done.returncode == 0, done.stderr
        assert [r["login"] for r in json.loads(done.stdout)["swept"]] == [login]
        assert password not in done.stdout + done.stderr
        assert run_roles(roles) == []
    finally:
        del os.environ[MIN_TTL_ENV]


def test_fifty_runs_opening_at_once_each_get_a_working_login(
        world: pipekey.Pipekey, roles: dict[str, Any]) -> None:
    """50 runs open concurrently; each login connects; none is left after they close."""
    barrier = threading.Barrier(50, timeout=60)

    def one(i: int) -> tuple[str, float]:
        barrier.wait()
        start = time.perf_counter()
        with world.pipeline("loader", run_name=f"burst-{i}") as run:
            ready = time.perf_counter() - start
            conn = run.connection("warehouse")
            db = connect(conn)
            with db, db.cursor() as cur:
                cur.execute("SELECT current_user")
                assert cur.fetchone()[0] == conn.login
            db.close()
            return conn.login, ready

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50), timeout=120))
    assert len({login for login, _ in results}) == 50
    assert run_roles(roles) == []
    print(f"50 runs: slowest ready in {max(r for _, r in results):.2f} s")


def test_the_minted_connection_reaches_pipekey_run_and_check_connect(
        world: pipekey.Pipekey, roles: dict[str, Any]) -> None:
    """`pipekey run` gives the child AIRFLOW_CONN_WAREHOUSE with the minted login (dropped
    after); `check --connect` mints one, connects, and drops it."""
    child = ("import os, psycopg2; from pipekey import Connection; "
             "c = Connection.from_uri(os.environ['AIRFLOW_CONN_WAREHOUSE']); "
             "db = psycopg2.connect(host=c.host, port=c.port, user=c.login, "
             "password=c.password, dbname=c.schema); cur = db.cursor(); "
             "cur.execute('SELECT current_user'); print('user', cur.fetchone()[0])")
    done = run_cli("run", "--pipeline", "loader", "--", sys.executable, "-c", child)
    assert done.returncode == 0, done.stderr
    assert "user lk_loader_" in done.stdout
    checked = run_cli("check", "--connect", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    items = {f["item"]: f for f in json.loads(checked.stdout)["findings"]}
    assert items["connection:warehouse (connect)"]["status"] == "ok"
    assert items["credential:warehouse_rw"]["status"] == "ok"
    assert ADMIN_PASSWORD not in checked.stdout + checked.stderr
    assert run_roles(roles) == []


def test_bench_credentials_prints_time_to_ready(world: pipekey.Pipekey,
                                                roles: dict[str, Any]) -> None:
    """`pipekey bench --credentials NAME` opens 50 runs at once and prints time to ready;
    every login is distinct and none is left."""
    done = run_cli("bench", "--credentials", "warehouse_rw", "--runs", "50", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["logins"] == 50 and result["ready"]["runs"] == 50
    assert 0 < result["ready"]["median"] <= result["ready"]["max"]
    table = run_cli("bench", "--credentials", "warehouse_rw", "--runs", "5")
    assert table.returncode == 0 and "5 runs at once: ready" in table.stdout, table.stderr
    print(table.stdout)
    assert run_roles(roles) == []


def test_what_a_run_created_is_kept_by_the_group_role(world: pipekey.Pipekey,
                                                      roles: dict[str, Any]) -> None:
    """A table the run's login created is reassigned to member_of[0] at close and the login
    dropped; the admin needs no privilege beyond CREATEROLE and pg_signal_backend for it."""
    db = superuser(roles)
    with db.cursor() as cur:
        cur.execute(f"GRANT CREATE ON SCHEMA lkt TO {WRITER}")
    try:
        with world.pipeline("loader") as run:
            conn = run.connection("warehouse")
            made = connect(conn)
            with made, made.cursor() as cur:
                cur.execute("CREATE TABLE lkt.made_by_run (id int)")
                cur.execute("INSERT INTO lkt.made_by_run VALUES (1)")
            made.close()
        with db.cursor() as cur:
            cur.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'lkt' AND "
                        "tablename = 'made_by_run'")
            assert cur.fetchone() == (WRITER,)
            cur.execute(f"SELECT pg_has_role('{ADMIN}', '{WRITER}', 'USAGE')")
            assert cur.fetchone() == (False,)  # the admin holds no group privilege after
    finally:
        with db.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS lkt.made_by_run")
            cur.execute(f"REVOKE CREATE ON SCHEMA lkt FROM {WRITER}")
        db.close()
    assert run_roles(roles) == []


def test_airflow_backend_serves_the_runs_minted_login(world: pipekey.Pipekey,
                                                      isolated: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a run, the Airflow backend's `warehouse` connection is the run's minted login;
    in a task with no run open it is refused, saying to open one (nothing is minted)."""
    airflow_mod = pytest.importorskip("pipekey.integrations.airflow")
    from types import SimpleNamespace

    monkeypatch.setattr("pipekey.integrations._airflow_tasks._instances", {})
    monkeypatch.setattr("pipekey.integrations._airflow_tasks.process_default", {})
    text = (isolated / "pipekey.toml").read_text()
    (isolated / "pipekey.toml").write_text(text.replace('scope = "loader"',
                                                         'scope = "loader"\ndags = ["load*"]'))
    backend = airflow_mod.PipekeySecretsBackend(manifest=str(isolated / "pipekey.toml"))
    context = {"dag": SimpleNamespace(dag_id="load_nightly"), "run_id": "manual__1",
               "params": {}, "ti": SimpleNamespace(task_id="load", map_index=0)}
    monkeypatch.setattr("pipekey.integrations._airflow_tasks.task_context", lambda: context)
    with pytest.raises(airflow_mod.AirflowSecretsBackendAccessDenied,
                       match="'warehouse' is a login minted per run"):
        backend.get_conn_value("warehouse")
    with world.pipeline("loader") as run:
        uri = backend.get_conn_value("warehouse")
        assert uri == run.connection("warehouse").to_uri()
        assert Connection.from_uri(uri).login == run.lease("warehouse").login


def test_dlt_loads_into_postgres_with_the_runs_login(world: pipekey.Pipekey,
                                                     isolated: Path,
                                                     roles: dict[str, Any]) -> None:
    """A real dlt pipeline loads into PostgreSQL as the run's minted login (dlt's
    destination credentials come from the run); the tables it made stay, owned by
    etl_writer, and the login is gone."""
    dlt = need("dlt")
    from pipekey.integrations import dlt as pipekey_dlt

    db = superuser(roles)
    with db.cursor() as cur:
        cur.execute(f"GRANT CREATE ON DATABASE analytics TO {WRITER}")
    text = (isolated / "pipekey.toml").read_text()
    (isolated / "pipekey.toml").write_text(
        text.replace('scope = "loader"', 'scope = "loader"\ndlt_destination = "warehouse"'))
    lk = pipekey.load(isolated / "pipekey.toml")
    pipekey_dlt.install()
    try:
        with lk.pipeline("loader") as run:
            login = run.lease("warehouse").login
            pipeline = dlt.pipeline(pipeline_name="lk_minted", destination="postgres",
                                    dataset_name="lkt_minted", pipelines_dir=str(isolated))
            pipeline.run([{"id": 1, "note": "minted"}], table_name="events")
        with db.cursor() as cur:
            cur.execute("SELECT nspowner::regrole::text FROM pg_namespace "
                        "WHERE nspname = 'lkt_minted'")
            assert cur.fetchone() == (WRITER,)
            cur.execute("SELECT note FROM lkt_minted.events")
            assert cur.fetchall() == [("minted",)]
        assert login not in run_roles(roles)
    finally:
        pipekey_dlt.uninstall()
        lk.close()
        with db.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS lkt_minted CASCADE")
            cur.execute(f"REVOKE CREATE ON DATABASE analytics FROM {WRITER}")
        db.close()


def test_renew_extends_the_login_and_is_audited(world: pipekey.Pipekey, isolated: Path,
                                                roles: dict[str, Any]) -> None:
    """run.renew moves VALID UNTIL to now() + ttl and records a renew event."""
    with world.pipeline("loader") as run:
        lease = run.lease("warehouse")
        db = superuser(roles)
        with db.cursor() as cur:
            cur.execute("SELECT (now() + interval '70 s')::text")
            cur.execute(f"ALTER ROLE \"{lease.login}\" VALID UNTIL %s", (cur.fetchone()[0],))
        renewed = run.renew("warehouse")
        with db.cursor() as cur:
            cur.execute("SELECT extract(epoch FROM rolvaliduntil - now()) FROM pg_roles "
                        "WHERE rolname = %s", (lease.login,))
            assert 590 < cur.fetchone()[0] <= 600
        db.close()
        assert renewed.login == lease.login and renewed.expires_at >= lease.expires_at
        assert run.lease("warehouse") == renewed
    events = [json.loads(line)["event"] for line in
              (isolated / ".pipekey" / "audit.jsonl").read_text().splitlines()]
    assert events.count("renew") == 1 and events[-1] == "revoke"


def test_async_runs_mint_and_drop_too(world: pipekey.Pipekey, roles: dict[str, Any]) -> None:
    """`async with` mints at open and drops at close (off the event loop)."""
    import asyncio

    async def main() -> str:
        async with world.pipeline("loader") as run:
            return run.connection("warehouse").login

    login = asyncio.run(main())
    assert login.startswith("lk_loader_") and run_roles(roles) == []


def test_a_pooled_admin_connection_the_server_closed_is_replaced(
        world: pipekey.Pipekey, roles: dict[str, Any]) -> None:
    """The server ends the pooled admin sessions (a restart, an idle timeout) during a run
    and between runs: the run's login is still dropped at close, and the next run opens, each
    on a fresh admin connection."""
    def end_admin_sessions() -> None:
        db = superuser(roles)
        with db.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE usename = %s", (ADMIN,))
            assert cur.fetchone()[0] >= 1
        db.close()
        time.sleep(0.2)

    with world.pipeline("loader") as run:
        end_admin_sessions()
        login = run.connection("warehouse").login
    assert login not in run_roles(roles)
    end_admin_sessions()
    with world.pipeline("loader") as run:
        connect(run.connection("warehouse")).close()
    assert run_roles(roles) == []


def test_sweep_errors_are_one_line(isolated: Path, master_key: str,
                                   roles: dict[str, Any]) -> None:
    """A sweep whose admin password is wrong fails in one line naming the definition (exit 1);
    an unknown definition is a usage error (exit 2). No password is printed."""
    make_world(isolated, roles, admin=admin_uri(roles, password="fake-wrong-admin-pw")).close()
    failed = run_cli("credentials", "sweep")
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "credential 'warehouse_rw'" in lines[0], failed.stderr
    assert "password authentication failed" in lines[0]
    assert "fake-wrong-admin-pw" not in failed.stdout + failed.stderr
    unknown = run_cli("credentials", "sweep", "--definition", "nope")
    assert unknown.returncode == 2 and "no credential 'nope'" in unknown.stderr


def test_a_rotated_admin_password_replaces_the_pool(world: pipekey.Pipekey,
                                                    roles: dict[str, Any]) -> None:
    """After the admin's password is rotated (in PostgreSQL and in the store), runs mint with
    the new one, and the old pool's admin sessions are closed, not kept."""
    from pipekey.credentials.postgres import POOL_SIZE

    def admin_sessions() -> int:
        with db.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (ADMIN,))
            return int(cur.fetchone()[0])

    db = superuser(roles)
    rotated = "fake-admin-pw-rotated-acct42"
    try:
        with world.pipeline("loader"):
            pass
        with db.cursor() as cur:
            cur.execute(f"ALTER ROLE {ADMIN} PASSWORD %s", (rotated,))
        world.set("connections/warehouse_admin", admin_uri(roles, password=rotated))
        for _ in range(3):
            with world.pipeline("loader") as run:
                connect(run.connection("warehouse")).close()
        deadline = time.monotonic() + 10
        while admin_sessions() > 1 and time.monotonic() < deadline:  # closed ones exit
            time.sleep(0.1)
        assert admin_sessions() == 1 < POOL_SIZE  # runs one after another: one connection
    finally:
        with db.cursor() as cur:
            cur.execute(f"ALTER ROLE {ADMIN} PASSWORD %s", (ADMIN_PASSWORD,))
        db.close()
    assert run_roles(roles) == []


def test_the_runs_connection_carries_none_of_the_admins_identity(
        isolated: Path, master_key: str, roles: dict[str, Any]) -> None:
    """The admin connection's client certificate, key and other extras stay with pipekey:
    the run's Connection keeps only how to reach the server (sslmode and the like)."""
    admin = Connection(conn_type="postgres", host="127.0.0.1", port=roles["port"], login=ADMIN,
                       password=ADMIN_PASSWORD, schema="analytics",
                       extra={"sslmode": "disable", "sslcert": "/nonexistent/admin.crt",
                              "sslkey": "/nonexistent/admin.key",
                              "sslpassword": "fake-admin-keypass-acct42",
                              "api_token": "fake-admin-extra-token-acct42"}).to_uri()
    lk = make_world(isolated, roles, admin=admin)
    try:
        with lk.pipeline("loader") as run:
            conn = run.connection("warehouse")
            assert conn.extra == {"sslmode": "disable"}
            assert "fake-admin" not in conn.to_uri() + json.dumps(run.env())
            connect(conn).close()
    finally:
        lk.close()
    assert run_roles(roles) == []


def test_an_async_run_cancelled_while_opening_leaves_no_login(
        world: pipekey.Pipekey, roles: dict[str, Any]) -> None:
    """A task cancelled while its run is still minting (the open goes on in a thread): the
    login the thread then makes is dropped, not left to expire."""
    import asyncio

    db = superuser(roles)
    db.autocommit = False
    with db.cursor() as cur:  # CREATE ROLE waits on this lock until we let go
        cur.execute("LOCK TABLE pg_authid IN EXCLUSIVE MODE")

    def creating() -> bool:
        probe = superuser(roles)
        with probe.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'CREATE ROLE%%'")
            waiting = bool(cur.fetchone()[0])
        probe.close()
        return waiting

    async def main() -> None:
        async def run() -> None:
            async with world.pipeline("loader"):
                raise AssertionError("the run must not open")

        task = asyncio.create_task(run())
        for _ in range(200):
            await asyncio.sleep(0.05)
            if creating():
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        db.rollback()  # let go: the thread's CREATE ROLE goes through now

    try:
        asyncio.run(main())  # waits for the open's thread (the default executor) to end
    finally:
        db.rollback()
        db.close()
    assert run_roles(roles) == []


@pytest.mark.parametrize("made", [
    pytest.param("CREATE ROLE lk_raised LOGIN CREATEROLE VALID UNTIL '2000-01-01'",
                 id="an-attribute-pipekey-never-gives"),
    pytest.param("CREATE ROLE lk_raised LOGIN VALID UNTIL '2000-01-01'; "
                 "CREATE ROLE lkt_member_of_it IN ROLE lk_raised", id="used-as-a-group"),
    pytest.param("CREATE ROLE lk_raised LOGIN VALID UNTIL '2000-01-01'; "
                 "COMMENT ON ROLE lk_raised IS 'pipekey run role; definition=other_rw; '",
                 id="another-definitions-login"),
])
def test_sweep_leaves_marked_roles_that_are_not_this_definitions_run_logins(
        isolated: Path, master_key: str, roles: dict[str, Any], made: str) -> None:
    """A role with the prefix and the marker is still left alone if pipekey would never
    have made it so (raised by hand, a group with members) or another definition made it
    (sweeping would reassign its objects to this definition's group)."""
    db = superuser(roles)
    with db.cursor() as cur:
        cur.execute(made)
        if "COMMENT" not in made:
            cur.execute("COMMENT ON ROLE lk_raised IS %s", (OURS + "run=forged",))
    lk = make_world(isolated, roles)
    try:
        assert lk.minter("warehouse_rw").sweep() == []
        with db.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'lk_raised'")
            assert cur.fetchone() is not None
    finally:
        with db.cursor() as cur:
            cur.execute("DROP ROLE IF EXISTS lkt_member_of_it, lk_raised")
        db.close()
        lk.close()


@pytest.mark.usefixtures("default_sigint")
def test_an_interrupt_while_revoking_one_login_still_drops_the_others(
        isolated: Path, master_key: str, roles: dict[str, Any]) -> None:
    """Ctrl-C while a run's first login is being dropped: the second is dropped too, the
    run's values are wiped, then KeyboardInterrupt goes on (the first expires by itself)."""
    two = MANIFEST.format(ttl=600, member_of=f'"{WRITER}"', more="") + """
[credentials.warehouse_rw2]
type = "postgres_role"
admin = "connections/warehouse_admin"
member_of = ["lkt_etl_writer"]

[pipelines.loader2]
scope = "loader"
connections = { first = "dynamic:warehouse_rw", second = "dynamic:warehouse_rw2" }
"""
    (isolated / "pipekey.toml").write_text(two)
    lk = pipekey.load(isolated / "pipekey.toml")
    lk.set("connections/warehouse_admin", admin_uri(roles))
    db = superuser(roles)

    def interrupt_while_dropping() -> None:
        probe = superuser(roles)
        try:
            for _ in range(200):
                with probe.cursor() as cur:
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type ="
                                " 'Lock' AND query LIKE 'ALTER ROLE%%NOLOGIN'")
                    if cur.fetchone()[0]:
                        break
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
        finally:
            probe.close()
            db.rollback()  # let the ALTER ROLE through: the interrupt is raised after it

    try:
        with pytest.raises(KeyboardInterrupt):
            with lk.pipeline("loader2") as run:
                first = run.connection("first").login
                second = run.connection("second").login
                db.autocommit = False
                with db.cursor() as cur:
                    cur.execute("LOCK TABLE pg_authid IN EXCLUSIVE MODE")
                threading.Thread(target=interrupt_while_dropping, daemon=True).start()
        assert second not in run_roles(roles)
        with pytest.raises(pipekey.RunClosed):
            run.connection("second")
    finally:
        db.rollback()
        db.autocommit = True
        with db.cursor() as cur:
            cur.execute(f'DROP ROLE IF EXISTS "{first}"')
        db.close()
        lk.close()


class _RefusingSink:
    """An audit sink that cannot record the given events (a full disk, say)."""

    name = "refusing"

    def __init__(self, *refused: str) -> None:
        self.refused = refused

    def write(self, event: Any) -> None:
        if event.event in self.refused:
            raise OSError("the audit sink is full")


@pytest.mark.parametrize("refused", [
    pytest.param(("mint",), id="mint-record-refused"),
    pytest.param(("revoke",), id="revoke-record-refused"),
])
def test_a_required_audit_sink_refusing_leaves_no_login(
        isolated: Path, master_key: str, roles: dict[str, Any], refused: tuple[str, ...]) -> None:
    """audit.required and a sink that cannot record the mint (the run does not open) or the
    revoke (the run's close fails loudly): either way both of the run's logins are dropped."""
    from pipekey.audit import Auditor

    (isolated / "pipekey.toml").write_text(
        MANIFEST.format(ttl=600, member_of=f'"{WRITER}"', more="") + """
[credentials.warehouse_rw2]
type = "postgres_role"
admin = "connections/warehouse_admin"
member_of = ["lkt_etl_writer"]

[pipelines.loader2]
scope = "loader"
connections = { first = "dynamic:warehouse_rw", second = "dynamic:warehouse_rw2" }
""")
    lk = pipekey.load(isolated / "pipekey.toml")
    lk.set("connections/warehouse_admin", admin_uri(roles))
    lk.audit = Auditor([_RefusingSink(*refused)], required=True)
    try:
        with pytest.raises(pipekey.PipekeyError, match="audit sink refusing"):
            with lk.pipeline("loader2"):
                assert len(run_roles(roles)) == 2
    finally:
        lk.close()
    assert run_roles(roles) == []


def test_a_run_outliving_an_admin_password_rotation_still_drops_its_login(
        world: pipekey.Pipekey, roles: dict[str, Any]) -> None:
    """The admin's password is rotated while a run lasts (and a newer run replaced the admin
    pool): the old run's close connects with the admin the store holds now and drops its
    login, rather than failing on the old password and leaving it to expire."""
    db = superuser(roles)
    rotated = "fake-admin-pw-rotated-again-acct42"
    try:
        with world.pipeline("loader") as old:
            login = old.connection("warehouse").login
            with db.cursor() as cur:
                cur.execute(f"ALTER ROLE {ADMIN} PASSWORD %s", (rotated,))
            world.set("connections/warehouse_admin", admin_uri(roles, password=rotated))
            with world.pipeline("loader"):
                pass
            assert login in run_roles(roles)
        assert login not in run_roles(roles)
    finally:
        with db.cursor() as cur:
            cur.execute(f"ALTER ROLE {ADMIN} PASSWORD %s", (ADMIN_PASSWORD,))
            cur.execute(f'DROP ROLE IF EXISTS "{login}"')
        db.close()


@pytest.mark.usefixtures("default_sigint")
def test_check_connect_interrupted_later_still_drops_the_logins_it_minted(
        isolated: Path, master_key: str, roles: dict[str, Any]) -> None:
    """`check --connect` minted a login for one pipeline and is interrupted (Ctrl-C) while
    reading the next pipeline's secrets: the minted login is dropped, not left to expire."""
    from pipekey.check import check_pipelines

    fifo = isolated / "slow.toml"
    os.mkfifo(fifo)  # reading it blocks until someone writes: a store that hangs
    (isolated / "pipekey.toml").write_text(
        MANIFEST.format(ttl=600, member_of=f'"{WRITER}"', more="").replace(
            'chain = ["local"]', 'chain = ["local", "slow"]').replace(
            "[audit]", f'[backends.slow]\ntype = "files"\npath = "{fifo}"\n\n[audit]') + """
[pipelines.zz_reader]
scope = "reader"
requires = ["token"]
""")
    lk = pipekey.load(isolated / "pipekey.toml")
    lk.set("connections/warehouse_admin", admin_uri(roles))

    def interrupt_once_minted() -> None:
        for _ in range(400):
            if run_roles(roles):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # the next pipeline's read is waiting on the fifo by now
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_minted, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            check_pipelines(lk, connect=True)
    finally:
        lk.close()
    assert run_roles(roles) == []


def test_check_connect_with_a_refused_mint_record_leaves_no_login(
        world: pipekey.Pipekey, roles: dict[str, Any]) -> None:
    """`check --connect` under audit.required, the sink refusing the mint record: the check
    reports it as failed and the login it minted is dropped at once."""
    from pipekey.audit import Auditor
    from pipekey.check import check_pipelines

    world.audit = Auditor([_RefusingSink("mint")], required=True)
    findings = check_pipelines(world, connect=True)
    failed = [f for f in findings if f.item == "connection:warehouse"]
    assert [f.status for f in failed] == ["failed"] and "audit sink" in failed[0].detail
    assert run_roles(roles) == []


def _docs_sql() -> str:
    """The SQL block docs/credentials.md marks as run here (from an empty cluster)."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "credentials.md").read_text()
    found = re.search(r"<!-- run by tests/stores/test_credentials_postgres\.py[^>]*-->\n```sql\n"
                      r"(.*?)```", doc, flags=re.S)
    assert found, "docs/credentials.md has no marked SQL block"
    return found.group(1)


def test_the_docs_set_up_from_an_empty_cluster_works(isolated: Path, master_key: str,
                                                     postgres: dict[str, Any]) -> None:
    """docs/credentials.md's SQL, run as written in a new database, is enough: a run mints a
    login that creates a table in `public` (PostgreSQL 15 needs CREATE on the schema) and
    writes to it; at close the table is etl_writer's and the login is gone."""
    db = superuser(postgres)
    with db.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname IN ('etl_writer', 'pipekey_admin')")
        assert cur.fetchone() is None, "roles of the doc's example exist already"
        cur.execute("CREATE DATABASE lkt_docs")
    docs = psycopg2.connect(host=postgres["socket_dir"], port=postgres["port"],
                            user="postgres", dbname="lkt_docs", connect_timeout=10)
    docs.autocommit = True
    lk = None
    try:
        with docs.cursor() as cur:
            cur.execute(_docs_sql())
        (isolated / "pipekey.toml").write_text(
            MANIFEST.format(ttl=600, member_of='"etl_writer"', more=""))
        lk = pipekey.load(isolated / "pipekey.toml")
        lk.set("connections/warehouse_admin", Connection(
            conn_type="postgres", host="127.0.0.1", port=postgres["port"],
            login="pipekey_admin", password="change-me", schema="lkt_docs").to_uri())
        with lk.pipeline("loader") as run:
            made = connect(run.connection("warehouse"))
            with made, made.cursor() as cur:
                cur.execute("CREATE TABLE public.loaded (id int)")
                cur.execute("INSERT INTO public.loaded VALUES (1)")
            made.close()
        with docs.cursor() as cur:
            cur.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'loaded'")
            assert cur.fetchone() == ("etl_writer",)
        assert run_roles(postgres) == []
    finally:
        if lk is not None:
            lk.close()
        docs.close()
        with db.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS lkt_docs WITH (FORCE)")
            cur.execute("DROP ROLE IF EXISTS pipekey_admin, etl_writer")
        db.close()
