"""Observe, then enforce, without Airflow: `pipekey propose` drafts [pipelines] from observe
audit events, the draft loads as a manifest, and `pipekey check --replay` lists what a
manifest would refuse. (The Airflow backend in observe mode: tests/integrations/
test_airflow_observe.py.)"""

from __future__ import annotations

import json
import random
import re
import tomllib
from pathlib import Path

import pytest

from pipekey.audit import iter_events
from pipekey.errors import UsageError
from pipekey.manifest import parse_manifest
from pipekey.propose import propose
from pipekey.replay import replay

from ..conftest import run_cli

FAKE = "fake-observe-value-never-recorded"
DOC = Path(__file__).resolve().parents[2] / "docs" / "airflow.md"


def _event(dag: str | None, key: str, task: str = "load", team: str | None = None,
           params: dict[str, str] | None = None, lookup: str | None = None,
           outcome: str = "ok", pipeline: str | None = None, enforce: str = "refuse",
           time: str = "2026-12-01T10:00:00+00:00") -> dict[str, object]:
    return {"event": "observe", "key": key, "outcome": outcome, "dag": dag, "task": task,
            "team": team, "env": "dev", "params": params, "pipeline": pipeline,
            "lookup": lookup or f"variable:{key.rpartition('/')[2]}", "enforce": enforce,
            "time": time, "id": key}


def _history() -> list[dict[str, object]]:
    """Two ads DAGs (DAG run param `account`) and a finance DAG of team finance, with a read
    outside any task and a miss (neither shapes the proposal)."""
    events = []
    for dag in ("ads_report", "ads_backfill"):
        for account in ("acct_1", "acct_2"):
            events.append(_event(dag, f"accounts/{account}/api_token",
                                 params={"account": account}))
            events.append(_event(dag, "airflow/connections/warehouse", task="store",
                                 lookup="connection:warehouse"))
    events.append(_event("ads_report", "accounts/acct_1/region", params={"account": "acct_1"}))
    events.append(_event("finance_daily", "airflow/variables/fx_api_key", team="finance"))
    events.append(_event("finance_daily", "airflow/connections/ledger", team="finance",
                         lookup="connection:ledger"))
    events.append(_event(None, "airflow/connections/smtp_default"))
    events.append(_event("ads_report", "airflow/variables/gone", outcome="absent"))
    events.append({"event": "read", "key": "shared/x", "outcome": "ok", "time": "t"})
    return events


def test_propose_finds_pipelines_scopes_grants_and_teams() -> None:
    """The brief's example: accounts/acct_1/api_token and accounts/acct_2/api_token read by
    dags ads_* with the DAG run param account -> scope accounts/{account}, requires
    api_token; the rest are grants; the finance DAG's team is kept."""
    proposal = propose(_history())
    assert proposal.used == 11 and proposal.events == 13
    ads, finance = proposal.pipelines["ads"], proposal.pipelines["finance"]
    assert (ads.dags, ads.scope, ads.requires, ads.optional, ads.grants) == (
        ["ads_*"], "accounts/{account}", ["api_token"], ["region"],
        ["airflow/connections/warehouse"])
    assert ads.read_by == ["ads_backfill", "ads_report"] and ads.teams == []
    assert (finance.dags, finance.scope, finance.teams, finance.grants) == (
        ["finance_daily"], "finance", ["finance"],
        ["airflow/connections/ledger", "airflow/variables/fx_api_key"])


def test_without_a_dag_run_param_the_keys_are_grants() -> None:
    """Outside a run the backend fills a scope only from the DAG run's params: keys read
    without one stay exact grants rather than a scope that would refuse them."""
    events = [_event("ads_report", f"accounts/{a}/api_token") for a in ("acct_1", "acct_2")]
    ads = propose(events).pipelines["ads"]
    assert ads.scope == "ads" and ads.grants == ["accounts/acct_1/api_token",
                                                 "accounts/acct_2/api_token"]


def test_the_proposal_is_deterministic_and_loads_as_a_manifest(tmp_path: Path) -> None:
    history = _history()
    text = propose(history).to_toml()
    for seed in range(5):
        shuffled = history[:]
        random.Random(seed).shuffle(shuffled)
        assert propose(shuffled).to_toml() == text
    manifest = parse_manifest(tomllib.loads(text), tmp_path / "pipekey.toml")
    assert manifest.pipelines["ads"].scope == "accounts/{account}"
    assert manifest.team_names() == {"finance"}
    # and pasted after an existing manifest's backends and audit
    existing = '[backends.local]\ntype = "local"\n[audit]\nsinks = [{ type = "file" }]\n'
    merged = parse_manifest(tomllib.loads(existing + text), tmp_path / "pipekey.toml")
    assert sorted(merged.pipelines) == ["ads", "finance"]
    assert FAKE not in text


@pytest.mark.parametrize("dags", [
    pytest.param(["ads_x\n"], id="newline"), pytest.param(["ads_a\n", "ads_b"], id="two"),
    pytest.param(["ads_x\r\x7f"], id="cr-del"), pytest.param(["ads_\U0001d400"], id="non-bmp"),
])
def test_a_dag_id_with_a_control_character_leaves_the_draft_loadable(
        tmp_path: Path, dags: list[str]) -> None:
    """A DAG id ending in a newline (Airflow's validate_key lets one through) or holding
    another control character, or a character outside the BMP, stays in its comment and its
    string: the draft still loads with the manifest parser, and says the DAG ids as written."""
    existing = parse_manifest(tomllib.loads(
        '[backends.local]\ntype = "local"\n[pipelines.fin]\ndags = ["fin*"]\n'
        'scope = "finance"\n'), tmp_path / "pipekey.toml").pipelines
    history = [_event(dag, "airflow/variables/tok", team="teama") for dag in dags]
    history.append(_event("fin_x\n", "airflow/variables/other", pipeline=None))
    proposal = propose(history, existing)
    text = proposal.to_toml()
    manifest = parse_manifest(tomllib.loads(text), tmp_path / "pipekey.toml")
    assert manifest.pipelines["ads"].grants == ["airflow/variables/tok"]
    comment = next(line for line in text.splitlines() if line.startswith("# read by"))
    assert comment.startswith(f"# read by {dags[0][:5]}")
    if len(dags) == 1:
        assert tomllib.loads(text)["pipelines"]["ads"]["dags"] == dags


def test_teams_sharing_a_word_get_their_own_dag_ids_and_scopes(tmp_path: Path) -> None:
    """Two teams with DAGs named ads_*: no pattern reaches the other team's DAG, and their
    scopes do not overlap (the manifest would refuse that)."""
    events = [_event(dag, f"accounts/{a}/api_token", team=team, params={"account": a})
              for dag, team in (("ads_eu", "team_eu"), ("ads_us", "team_us"))
              for a in ("acct_1", "acct_2")]
    proposal = propose(events)
    assert sorted(proposal.pipelines) == ["ads_team_eu", "ads_team_us"]
    eu, us = proposal.pipelines["ads_team_eu"], proposal.pipelines["ads_team_us"]
    assert (eu.dags, us.dags) == (["ads_eu"], ["ads_us"])
    assert eu.scope == "accounts/{account}" and "{" not in us.scope
    assert us.grants == ["accounts/acct_1/api_token", "accounts/acct_2/api_token"]
    manifest = parse_manifest(tomllib.loads(proposal.to_toml()), tmp_path / "pipekey.toml")
    assert replay(manifest, events).refusals == []


def test_replay_of_the_proposal_refuses_nothing_and_a_narrower_manifest_refuses(
        tmp_path: Path) -> None:
    history = _history()
    text = propose(history).to_toml()
    manifest = parse_manifest(tomllib.loads(text), tmp_path / "pipekey.toml")
    result = replay(manifest, history)
    assert [r.dag for r in result.refusals] == [None]  # the read outside any task
    assert result.events == 12 and result.allowed == 11
    narrower = parse_manifest(tomllib.loads(text.replace(
        '"airflow/connections/ledger", ', "")), tmp_path / "pipekey.toml")
    lines = [r.line() for r in replay(narrower, history).refusals if r.dag]
    assert lines == ["refused: DAG 'finance_daily' task 'load' (team 'finance'): connection "
                     "ledger -> airflow/connections/ledger (outside pipelines.finance's scope, "
                     "grants and shared/; 1x); fix: add 'airflow/connections/ledger' to "
                     "pipelines.finance.grants"]


def test_replay_outside_a_run_needs_the_dag_run_params(tmp_path: Path) -> None:
    """A read recorded without the scope's parameter is refused by a templated scope, with
    the fix naming the params; with them it is allowed."""
    manifest = parse_manifest(tomllib.loads(
        '[pipelines.ads]\ndags = ["ads_*"]\nscope = "accounts/{account}"\n'
        'requires = ["api_token"]\n'), tmp_path / "pipekey.toml")
    refused = replay(manifest, [_event("ads_report", "accounts/acct_1/api_token")]).refusals
    assert len(refused) == 1 and "give DAG run params ['account']" in refused[0].fix
    assert replay(manifest, [_event("ads_report", "accounts/acct_1/api_token",
                                    params={"account": "acct_1"})]).refusals == []
    assert replay(manifest, [_event("ads_report", "accounts/acct_2/api_token",
                                    params={"account": "acct_1"})]).refusals != []


def test_a_team_outside_the_pipelines_teams_is_refused_in_broker_mode(tmp_path: Path) -> None:
    manifest = parse_manifest(tomllib.loads(
        '[pipelines.fin]\ndags = ["finance_*"]\nscope = "fin"\nteams = ["finance"]\n'
        'grants = ["airflow/variables/fx"]\n'), tmp_path / "pipekey.toml")
    ok = _event("finance_daily", "airflow/variables/fx", team="finance")
    other = _event("finance_daily", "airflow/variables/fx", team="marketing")
    assert replay(manifest, [ok]).refusals == []
    [refusal] = replay(manifest, [other]).refusals
    assert "team 'marketing'" in refusal.why and "pipelines.fin.teams" in refusal.fix


def test_existing_pipelines_get_advice_not_a_new_pipeline() -> None:
    """A DAG the manifest claims gets no proposed pipeline: refusals recorded for it
    become the grants to add, and one claimed since it was observed is named."""
    events = [_event("ads_report", "airflow/variables/extra", pipeline="ads"),
              _event("ads_report", "airflow/variables/ok", pipeline="ads", enforce="allow")]
    existing = parse_manifest(tomllib.loads('[pipelines.ads]\nscope = "ads"\n'
                                            'dags = ["ads_*"]\n'), Path("pipekey.toml"))
    events.append(_event("ads_backfill", "airflow/variables/older"))  # before ads claimed it
    proposal = propose(events, existing.pipelines)
    assert proposal.pipelines == {}
    assert proposal.refused == {"ads": {"ads_report": ["airflow/variables/extra"]}}
    assert proposal.claimed == {"ads_backfill"}
    text = proposal.to_toml()
    assert "# pipelines.ads (in the manifest already)" in text and "ads_backfill" in text


def test_the_audit_file_is_streamed_and_a_bad_line_is_named(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.write_text(json.dumps(_event("a_b", "k/x")) + "\n\nnot json\n")
    events = iter_events(audit)
    assert next(events)["key"] == "k/x"  # read before the bad line is reached
    with pytest.raises(UsageError, match=r"audit.jsonl:3: not an audit record"):
        next(events)


def test_cli_propose_then_check_replay(isolated: Path) -> None:
    """The commands end to end on an audit file: propose (TOML and --json), a manifest with
    the proposal replays clean (exit 0), one without a grant lists the refusal (exit 1)."""
    audit = isolated / "audit.jsonl"
    audit.write_text("".join(json.dumps(e) + "\n" for e in _history() if e.get("dag")))
    base = '[backends.local]\ntype = "local"\n'
    (isolated / "pipekey.toml").write_text(base)
    proposed = run_cli("propose", "--file", str(audit), cwd=isolated)
    assert proposed.returncode == 0, proposed.stderr
    assert "2 pipelines proposed from 11 observed reads" in proposed.stderr
    as_json = json.loads(run_cli("propose", "--file", str(audit), "--json",
                                 cwd=isolated).stdout)
    assert as_json["pipelines"]["ads"]["scope"] == "accounts/{account}"
    (isolated / "pipekey.toml").write_text(base + proposed.stdout)
    clean = run_cli("check", "--replay", "--file", str(audit), cwd=isolated)
    assert clean.returncode == 0 and clean.stdout == "", clean.stdout + clean.stderr
    assert "11 observed reads replayed" in clean.stderr and "0 would be refused" in clean.stderr
    (isolated / "pipekey.toml").write_text(base + proposed.stdout.replace(
        'grants = ["airflow/connections/warehouse"]', ""))
    refused = run_cli("check", "--replay", "--file", str(audit), "--json", cwd=isolated)
    assert refused.returncode == 1
    found = json.loads(refused.stdout)["refusals"]
    assert {(r["dag"], r["key"], r["count"]) for r in found} == {
        ("ads_backfill", "airflow/connections/warehouse", 2),
        ("ads_report", "airflow/connections/warehouse", 2)}
    since = run_cli("check", "--replay", "--file", str(audit), "--since",
                    "2030-01-01T00:00:00", cwd=isolated)
    assert since.returncode == 0 and "0 observed reads" in since.stderr
    wrong = run_cli("check", "--since", "1h", cwd=isolated)
    assert wrong.returncode == 2 and "go with --replay" in wrong.stderr


def _doc_blocks() -> dict[str, str]:
    marked = re.findall(r"<!-- checked by tests/unit/test_observe\.py: (\w+) -->\n```\w+\n"
                        r"(.*?)```", DOC.read_text(), flags=re.S)
    return dict(marked)


def test_the_docs_walk_runs_as_written(tmp_path: Path) -> None:
    """docs/airflow.md "Observe, then enforce": its history gives its proposal exactly, the
    proposal loads and replays clean, and without the ledger grant the replay prints the
    doc's line."""
    blocks = _doc_blocks()
    assert sorted(blocks) == ["history", "proposal", "replay"]
    history = [json.loads(line) for line in blocks["history"].splitlines()]
    assert propose(history).to_toml() == blocks["proposal"]
    manifest = parse_manifest(tomllib.loads(blocks["proposal"]), tmp_path / "pipekey.toml")
    assert replay(manifest, history).refusals == []
    narrower = blocks["proposal"].replace('grants = ["airflow/connections/ledger"]\n', "")
    refused = replay(parse_manifest(tomllib.loads(narrower), tmp_path / "pipekey.toml"),
                     history).refusals
    shown = [line for line in blocks["replay"].splitlines() if not line.startswith("$ ")]
    assert [r.line() for r in refused] == shown


def test_a_dag_run_param_named_env_never_becomes_a_field() -> None:
    """{env} in a template is the environment: a DAG run param `env` naming a segment is no
    scope parameter."""
    events = [_event("etl_load", f"data/{e}/token", params={"env": e}) for e in ("dev", "qa")]
    etl = propose(events).pipelines["etl"]
    assert "{" not in etl.scope and etl.grants == ["data/dev/token", "data/qa/token"]
