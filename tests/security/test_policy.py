"""pipekey.policy is the one place that decides what a reader may read and the one that fills
key templates: no other module defines a policy method or fills a template by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipekey.errors import ManifestError
from pipekey.manifest import parse_manifest
from pipekey.policy import Ownership, RunPolicy, TeamPolicy, parameter_free_policy, run_policy

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pipekey"
#: where a template may still be filled outside pipekey.policy, and why
FILLERS_ALLOWED: dict[str, str] = {}


def _calls(tree: ast.AST) -> list[tuple[int, str, list[ast.expr]]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            out.append((node.lineno, node.func.attr, node.args))
    return out


def test_no_module_but_the_policy_decides_or_fills_templates() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "policy.py" or rel.startswith("policy/"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in ("allows", "allows_subtree",
                                                                    "claims"):
                found.append(f"{rel}:{node.lineno} defines {node.name}()")
        if rel in FILLERS_ALLOWED:
            continue
        for line, attr, args in _calls(tree):
            if attr == "format_map" or (attr == "replace" and args and isinstance(
                    args[0], ast.Constant) and isinstance(args[0].value, str)
                    and "{" in args[0].value):
                found.append(f"{rel}:{line} fills a template by hand ({attr})")
    assert not found, "\n".join(found)


def test_a_runs_policy_and_the_parameter_free_part_of_it() -> None:
    manifest = parse_manifest({"pipelines": {"ads": {
        "scope": "marketing/ads/{account}", "requires": ["token"],
        "grants": ["finance/fx_{env}", "ops/{account}_pager"],
        "connections": {"wh": "connections/wh_{env}", "lake": "connections/lake_{account}"}}}},
        Path("pipekey.toml"), None)
    config = manifest.pipelines["ads"]
    run = run_policy("ads", config, "prod", {"account": "acct_42"})
    assert run.allows("marketing/ads/acct_42/anything")
    assert run.allows("marketing/ads/token") and run.allows("marketing/token")
    assert not run.allows("marketing/ads/other") and not run.allows("marketing/ads/acct_43/x")
    assert run.allows("ops/acct_42_pager") and run.allows("finance/fx_prod/rate")
    assert run.allows("connections/lake_acct_42") and not run.allows("connections/lake_x")
    assert not run.allows_subtree("marketing/token")  # one key at a parent level, no subtree
    outside = parameter_free_policy("ads", config, "prod")
    assert outside.connection_keys == {"wh": "connections/wh_prod"}
    assert outside.allows("finance/fx_prod/rate") and outside.allows("shared/x")
    assert not outside.allows("ops/acct_42_pager") and not outside.allows("marketing/ads/x")
    assert RunPolicy(None).allows("shared/a") and not RunPolicy(None).allows("sharedx/a")


def test_a_team_policy_holds_over_every_served_environment() -> None:
    """A team's pipeline in connections/wh_{env}: with prod and dev served, both keys are the
    team's, whichever environment the API server itself runs in."""
    manifest = parse_manifest({"environments": ["prod", "dev"], "env": "prod", "pipelines": {
        "ads": {"scope": "marketing/{account}", "teams": ["marketing"],
                "connections": {"wh": "connections/wh_{env}"}}}}, Path("pipekey.toml"), None)
    policy = TeamPolicy("marketing", manifest.pipelines, ("dev", "prod"))
    assert policy.allows("connections/wh_dev") and policy.allows("connections/wh_prod")
    assert not policy.allows("connections/wh_staging")
    only_prod = TeamPolicy("marketing", manifest.pipelines, ("prod",))
    assert not only_prod.allows("connections/wh_dev")


@pytest.mark.parametrize(("theirs", "overlap"), [
    pytest.param("data/ledger_{env}", True, id="mid-segment-literal"),
    pytest.param("{area}/ledger", True, id="no-literal-prefix"),
    pytest.param("data", True, id="the-other-team-s-parent"),
    pytest.param("datalake/{x}", False, id="a-longer-segment"),
    pytest.param("finance/{x}", False, id="elsewhere"),
])
def test_ownership_is_a_prefix_check(theirs: str, overlap: bool) -> None:
    pipelines = parse_manifest({"pipelines": {
        "mine": {"scope": "data/{dataset}", "teams": ["marketing"]},
        "theirs": {"scope": theirs, "teams": ["finance"]}}}, Path("pipekey.toml"), None) \
        if not overlap else None
    if overlap:
        with pytest.raises(ManifestError, match="'marketing' and 'finance'|'finance' and "
                                                "'marketing'"):
            parse_manifest({"pipelines": {
                "mine": {"scope": "data/{dataset}", "teams": ["marketing"]},
                "theirs": {"scope": theirs, "teams": ["finance"]}}}, Path("pipekey.toml"), None)
        return
    assert pipelines is not None
    owners = Ownership(pipelines.pipelines, ("dev",))
    assert owners.owners("data/x/token") == {"marketing"}
    assert owners.owners("shared/x") == set()


def test_one_pipeline_serving_two_teams_is_no_overlap() -> None:
    manifest = parse_manifest({"pipelines": {
        "both": {"scope": "data/{dataset}", "teams": ["marketing", "finance"]}}},
        Path("pipekey.toml"), None)
    assert Ownership(manifest.pipelines, ("dev",)).owners("data/x") == {"marketing", "finance"}
