"""Observe, then enforce, with real Airflow 3: the backend in ``mode="observe"`` serves what
enforcement would refuse and records each lookup; `pipekey propose` drafts the pipelines;
`pipekey check --replay` finds nothing the draft refuses; enforcing it refuses a read outside
it. DAGs run with `dag.test()` in a subprocess, the backend loaded by Airflow from
``[secrets] backend``; plus in-process checks with the task's context faked."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from pipekey.audit import read_events
from pipekey.backends.local import LocalBackend, generate_master_key
from pipekey.manifest import load_manifest

from ..conftest import run_cli
from ..extras import need
from ..servers import airflow_env
from .test_airflow import _in_task, unit  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
need("airflow")

AUDIT = '[audit]\nsinks = [{ type = "file", path = "audit.jsonl" }]\n'


# -- in-process -------------------------------------------------------------------------------
def _observing(unit, monkeypatch):  # noqa: F811 - the fixture
    unit.manifest_path.write_text(unit.manifest_path.read_text() + AUDIT)
    return unit.PipekeySecretsBackend(manifest=str(unit.manifest_path), mode="observe")


def test_observe_serves_what_enforcement_refuses_and_records_both(unit, monkeypatch) -> None:  # noqa: F811
    """The same lookups the direct-mode tests refuse are served in observe mode, each with an
    observe event: the reader, the lookup, the key, enforce allow/refuse and the refusal;
    never a value."""
    backend = _observing(unit, monkeypatch)
    _in_task(monkeypatch, unit, "other_dag")
    assert "fake-other-pw" in backend.get_conn_value("other_db")  # pipeline other: refused
    _in_task(monkeypatch, unit, "ads_report")
    assert "audit/a" in backend.get_conn_value("audit")  # mapped, parameter-free: allowed
    assert "fake-other-pw" in backend.get_conn_value("other_db", team_name="marketing")
    assert backend.get_variable("nothing_here") is None
    _in_task(monkeypatch, unit, "ads_report", account="acct_42", note="fake-dag-param-pw")
    assert backend.get_conn_value("warehouse") is not None  # the run's mapping, from params
    _in_task(monkeypatch, unit, None)
    assert "fake-other-pw" in backend.get_conn_value("other_db")
    events = [e for e in read_events(unit.manifest_path.parent / "audit.jsonl")
              if e["event"] == "observe"]
    seen = [(e["dag"], e["lookup"], e["key"], e["outcome"], e["enforce"], e["pipeline"],
             e["team"], e["params"]) for e in events]
    assert seen == [
        ("other_dag", "connection:other_db", "airflow/connections/other_db", "ok", "refuse",
         "other", None, None),
        ("ads_report", "connection:audit", "connections/audit_dev", "ok", "allow", "ads",
         None, None),
        ("ads_report", "connection:other_db", "airflow/connections/other_db", "ok", "refuse",
         "ads", "marketing", None),
        ("ads_report", "variable:nothing_here", "airflow/variables/nothing_here", "absent",
         "allow", "ads", None, None),
        ("ads_report", "connection:warehouse", "connections/warehouse_acct_42", "ok", "allow",
         "ads", None, {"account": "acct_42"}),
        (None, "connection:other_db", "airflow/connections/other_db", "ok", "refuse", None,
         None, None)]
    assert all(e["task"] == "load" for e in events[:-1]) and events[-1]["task"] is None
    assert "may not read connection 'other_db'" in events[0]["detail"]
    text = (unit.manifest_path.parent / "audit.jsonl").read_text()
    assert "fake-" not in text


def test_observe_serves_a_refused_read_by_the_dropin_rule(unit, monkeypatch) -> None:  # noqa: F811
    """A read enforcement refuses is served as the drop-in serves it: the caller's team's
    ``<team>--<id>`` first, then ``<id>``; in multi-team mode an id holding ``--`` (another
    team's name) is refused, never served to the wrong team."""
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    store = LocalBackend("local", unit.manifest_path.parent / "dev.db",
                         master_key=os.environ["PIPEKEY_MASTER_KEY"])
    store.put("airflow/variables/teamb--token", "fake-team-b-pw")
    store.put("airflow/variables/teama--tok", "fake-team-a-tok")
    store.put("airflow/variables/tok", "fake-plain-tok")
    store.close()
    backend = _observing(unit, monkeypatch)
    _in_task(monkeypatch, unit, "other_dag")
    assert backend.get_variable("teamb--token", team_name="teama") is None
    assert backend.get_variable("tok", team_name="teama") == "fake-team-a-tok"
    assert backend.get_variable("tok", team_name="teamb") == "fake-plain-tok"
    assert backend.get_variable("tok") == "fake-plain-tok"
    events = [(e["team"], e["key"], e["outcome"], e["enforce"])
              for e in read_events(unit.manifest_path.parent / "audit.jsonl")
              if e["event"] == "observe"]
    assert events == [
        ("teama", "airflow/variables/teamb--token", "absent", "refuse"),
        ("teama", "airflow/variables/teama--tok", "ok", "refuse"),
        ("teamb", "airflow/variables/tok", "ok", "refuse"),
        (None, "airflow/variables/tok", "ok", "refuse")]
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "False")  # one team: '--' is a name
    assert backend.get_variable("teamb--token", team_name="teama") == "fake-team-b-pw"


def test_observe_never_records_a_dag_run_param_or_env_that_is_no_segment(
        unit, monkeypatch) -> None:  # noqa: F811
    """A DAG run's scope parameter or ``pipekey_env`` holding anything (a value pasted by
    mistake) reaches the audit file neither in ``env`` nor in the refusal's ``detail``: the
    detail names the parameter and what is wrong, ``env`` is a placeholder."""
    backend = _observing(unit, monkeypatch)
    _in_task(monkeypatch, unit, "ads_report", account="fake pw with spaces!")
    assert "fake-other-pw" in backend.get_conn_value("other_db")
    _in_task(monkeypatch, unit, "ads_report", account="acct_42", pipekey_env="fake env pw!")
    assert "fake-other-pw" in backend.get_conn_value("other_db")
    _in_task(monkeypatch, unit, "other_dag", pipekey_env="fake env pw!")
    assert "fake-other-pw" in backend.get_conn_value("other_db")
    text = (unit.manifest_path.parent / "audit.jsonl").read_text()
    assert "fake" not in text and "pw" not in text
    events = [e for e in read_events(unit.manifest_path.parent / "audit.jsonl")
              if e["event"] == "observe"]
    assert [e["env"] for e in events] == ["dev", "<invalid>", "<invalid>"]
    assert all(e["enforce"] == "refuse" for e in events)
    assert "parameter 'account' is not a valid key segment (20 characters, with " \
        "punctuation other than '_', '.', '-' and whitespace" in events[0]["detail"]
    assert "environment is not a valid environment name (12 characters" in events[1]["detail"]


def test_observe_mode_needs_an_audit_sink(unit) -> None:  # noqa: F811
    with pytest.raises(Exception, match=r"mode 'observe' records every read .* has no audit "
                                        r"sink: add \[audit\]"):
        unit.PipekeySecretsBackend(manifest=str(unit.manifest_path), mode="observe")


# -- end to end: observe -> propose -> review -> enforce -------------------------------------
DAGS = textwrap.dedent('''
    import hashlib, sys
    from datetime import datetime
    from airflow.sdk import Variable, dag, get_current_context, task
    from airflow.sdk.bases.hook import BaseHook

    def digest(value):
        return hashlib.sha256(value.encode()).hexdigest()[:16]

    @dag(dag_id="ads_report", schedule=None, start_date=datetime(2026, 1, 1),
         params={"account": "acct_1", "sneak": False})
    def ads_report():
        @task
        def load():
            account = get_current_context()["params"]["account"]
            print("READ ads_report load", account,
                  digest(Variable.get(f"accounts/{account}/api_token")))
            if get_current_context()["params"]["sneak"]:
                try:
                    Variable.get("fx_api_key")
                    print("SNEAK SERVED")
                except Exception as exc:
                    print("SNEAK REFUSED", type(exc).__name__, exc)
        @task
        def store():
            print("READ ads_report store", digest(BaseHook.get_connection("warehouse").password))
        load() >> store()

    @dag(dag_id="ads_backfill", schedule=None, start_date=datetime(2026, 1, 1),
         params={"account": "acct_2"})
    def ads_backfill():
        @task
        def load():
            account = get_current_context()["params"]["account"]
            print("READ ads_backfill load", account,
                  digest(Variable.get(f"accounts/{account}/api_token")))
        load()

    @dag(dag_id="finance_daily", schedule=None, start_date=datetime(2026, 1, 1))
    def finance_daily():
        @task
        def extract():
            print("READ finance_daily extract", digest(Variable.get("fx_api_key")))
        @task
        def report():
            print("READ finance_daily report", digest(BaseHook.get_connection("ledger").password))
        extract() >> report()

    dags = {d.dag_id: d for d in (ads_report(), ads_backfill(), finance_daily())}
    if __name__ == "__main__":
        for spec in sys.argv[1:]:
            dag_id, _, conf = spec.partition(":")
            state = dags[dag_id].test(run_conf=dict(p.split("=") for p in conf.split(",") if p))
            print("DAG RUN STATE:", dag_id, state.state)
''')

VALUES = {"airflow/variables/accounts/acct_1/api_token": "fake-observe-token-acct1",
          "airflow/variables/accounts/acct_2/api_token": "fake-observe-token-acct2",
          "airflow/variables/fx_api_key": "fake-observe-fx-key",
          "airflow/connections/warehouse": "postgres://etl:fake-observe-wh-pw@wh:5432/ads",
          "airflow/connections/ledger": "postgres://fin:fake-observe-ledger-pw@ledger/fin"}
SECRETS = ["fake-observe-token-acct1", "fake-observe-token-acct2", "fake-observe-fx-key",
           "fake-observe-wh-pw", "fake-observe-ledger-pw"]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def _run(home: Path, work: Path, manifest: Path, key: str, mode: str | None,
         *runs: str) -> str:
    kwargs = {"manifest": str(manifest), **({"mode": mode} if mode else {})}
    result = subprocess.run(
        [sys.executable, str(work / "dags" / "observed.py"), *runs],
        env=airflow_env(home, {
            "AIRFLOW__SECRETS__BACKEND": "pipekey.integrations.airflow.PipekeySecretsBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(kwargs),
            "AIRFLOW__CORE__DAGS_FOLDER": str(work / "dags"), "PIPEKEY_MASTER_KEY": key}),
        capture_output=True, text=True, timeout=600, cwd=work)
    output = result.stdout + result.stderr
    (work / f"dag-output-{mode or 'direct'}.txt").write_text(output)
    assert result.returncode == 0, output[-4000:]
    for spec in runs:
        assert f"DAG RUN STATE: {spec.partition(':')[0]} success" in output, output[-4000:]
    assert not [s for s in SECRETS if s in output]
    return output


def test_observe_propose_review_enforce(airflow_home: Path, tmp_path: Path) -> None:
    """Three DAGs, five tasks, two accounts by DAG run param, in observe mode with no
    pipelines: every read served (and recorded as one enforcement would refuse); propose
    drafts ads (scope airflow/variables/accounts/{account}) and finance; the draft replays
    clean; enforcing it serves the same reads and refuses ads_report reading finance's key."""
    key = generate_master_key()
    store = LocalBackend("local", tmp_path / "store.db", master_key=key)
    for name, value in VALUES.items():
        store.put(name, value)
    store.close()
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "observed.py").write_text(DAGS)
    backends = '[backends.local]\ntype = "local"\npath = "store.db"\n'
    observing = tmp_path / "pipekey.toml"
    observing.write_text(backends + AUDIT)

    # 1-2. switch and observe
    output = _run(airflow_home, tmp_path, observing, key, "observe", "ads_report:account=acct_1",
                  "ads_report:account=acct_2", "ads_backfill:", "finance_daily:")
    reads = {
        "ads_report load acct_1": "airflow/variables/accounts/acct_1/api_token",
        "ads_report load acct_2": "airflow/variables/accounts/acct_2/api_token",
        "ads_backfill load acct_2": "airflow/variables/accounts/acct_2/api_token",
        "finance_daily extract": "airflow/variables/fx_api_key"}
    for line, name in reads.items():
        assert f"READ {line} {_digest(VALUES[name])}" in output
    assert output.count(f"READ ads_report store {_digest('fake-observe-wh-pw')}") == 2
    assert f"READ finance_daily report {_digest('fake-observe-ledger-pw')}" in output
    audit = tmp_path / "audit.jsonl"
    observed = [e for e in read_events(audit) if e["event"] == "observe"]
    assert {(e["dag"], e["task"], e["key"], e["enforce"]) for e in observed} == {
        ("ads_report", "load", "airflow/variables/accounts/acct_1/api_token", "refuse"),
        ("ads_report", "load", "airflow/variables/accounts/acct_2/api_token", "refuse"),
        ("ads_report", "store", "airflow/connections/warehouse", "refuse"),
        ("ads_backfill", "load", "airflow/variables/accounts/acct_2/api_token", "refuse"),
        ("finance_daily", "extract", "airflow/variables/fx_api_key", "refuse"),
        ("finance_daily", "report", "airflow/connections/ledger", "refuse")}
    assert not [s for s in SECRETS if s in audit.read_text()]

    # 3. review: the proposal, as a person would paste it into the manifest
    proposed = run_cli("--config", str(observing), "propose", cwd=tmp_path)
    assert proposed.returncode == 0, proposed.stderr
    draft = tomllib.loads(proposed.stdout)["pipelines"]
    assert draft["ads"] == {"dags": ["ads_*"], "scope": "airflow/variables/accounts/{account}",
                            "requires": ["api_token"],
                            "grants": ["airflow/connections/warehouse"]}
    assert draft["finance"]["dags"] == ["finance_daily"]
    enforcing = tmp_path / "enforce.toml"
    enforcing.write_text(observing.read_text() + proposed.stdout)
    assert sorted(load_manifest(enforcing).pipelines) == ["ads", "finance"]
    replayed = run_cli("--config", str(enforcing), "check", "--replay", "--since", "1h",
                       cwd=tmp_path)
    assert replayed.returncode == 0 and replayed.stdout == "", replayed.stdout + replayed.stderr
    assert f"{len(observed)} observed reads replayed" in replayed.stderr

    # 4. enforce: the same reads are served, a read outside the draft is refused
    output = _run(airflow_home, tmp_path, enforcing, key, None, "finance_daily:",
                  "ads_report:account=acct_2,sneak=1")
    assert f"READ ads_report load acct_2 {_digest(VALUES[reads['ads_report load acct_2']])}" \
        in output
    assert f"READ finance_daily report {_digest('fake-observe-ledger-pw')}" in output
    assert "SNEAK REFUSED" in output and "SNEAK SERVED" not in output
    assert "may not read variable 'fx_api_key'" in output
