"""``pipekey inventory``: keys, where they resolve, audit, findings; never a value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipekey.audit import AuditEvent
from pipekey.audit_index import AuditIndex
from pipekey.errors import ManifestError
from pipekey.manifest import load_manifest
from pipekey.redact import encodings
from tests.conftest import run_cli
from tests.inventory_scenario import SHADOW_VAR, Scenario, make


@pytest.fixture
def world(tmp_path: Path, master_key: str) -> Scenario:
    return make(tmp_path / "world", master_key)


def _no_value(s: Scenario, *texts: str) -> None:
    for value in s.all_values():
        for form in encodings(value):
            for text in texts:
                assert form not in text


def test_inventory_json_shows_each_key_its_place_audit_and_findings(world: Scenario) -> None:
    done = run_cli("inventory", "--env", "dev", "--json", env=world.env)
    assert done.returncode == 0, done.stderr
    _no_value(world, done.stdout, done.stderr)
    data = json.loads(done.stdout)
    (dev,) = data["environments"]
    keys = {k["key"]: k for k in dev["keys"]}
    assert keys["marketing/ads/acct_42/api_token"]["state"] == "ok"
    token = keys["marketing/ads/acct_42/api_token"]
    assert token["resolves"]["backend"] == "local" and token["resolves"]["version"] == "1"
    assert token["audit"]["reads"] == 1 and token["audit"]["runs"] == [
        {"pipeline": "ads", "run": "ads_report__run_1"}]
    assert token["audit"]["denials"] == 1 and token["audit"]["denied_to"] == {"billing": 1}
    assert token["teams"] == ["team_a"]
    assert keys["marketing/ads/acct_43/api_token"]["state"] == "missing"
    assert keys["finance/billing/stripe_key"]["state"] == "stale"
    assert keys["finance/billing/stripe_key"]["rotate_after"] == "1s"
    webhook = keys["ops/notify/webhook"]
    assert webhook["state"] == "shadowed"
    assert webhook["resolves"]["backend"] == "env"
    assert webhook["resolves"]["store_name"] == SHADOW_VAR
    assert [p["backend"] for p in webhook["shadowed"]] == ["local"]
    assert keys["old/unused"]["state"] == "orphan"
    assert keys["connections/warehouse_acct_43"]["used_by"][0]["how"] == "connection warehouse"
    found = {(f["kind"], f["key"]) for f in dev["findings"]}
    assert found == {("missing", "marketing/ads/acct_43/api_token"),
                     ("stale", "finance/billing/stripe_key"),
                     ("shadowed", "ops/notify/webhook"),
                     ("orphan", "old/unused"), ("orphan", "finance/billing/legacy_key"),
                     ("sprawl", "finance/billing/legacy_key")}
    legacy = next(f for f in dev["findings"] if f["key"] == "finance/billing/legacy_key"
                  and f["kind"] == "orphan")
    assert "readable by billing but declared by none" in legacy["message"]


def test_inventory_text_gives_one_line_per_finding_with_its_fix(world: Scenario) -> None:
    done = run_cli("inventory", "--env", "dev", env=world.env)
    assert done.returncode == 0, done.stderr
    _no_value(world, done.stdout, done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("missing:")]
    assert lines == ["missing: [dev] marketing/ads/acct_43/api_token: declared by ads and "
                     "stored in no backend; fix: pipekey --env dev set "
                     "marketing/ads/acct_43/api_token"]
    assert "sprawl: [dev] finance/billing/legacy_key: read 1 time(s) by runs of billing" \
        in done.stdout


def test_check_exits_1_on_findings_and_0_without(world: Scenario, tmp_path: Path) -> None:
    assert run_cli("inventory", "--check", env=world.env).returncode == 1
    clean = tmp_path / "clean.toml"
    clean.write_text('[pipelines.p]\nscope = "team/p"\nrequires = ["token"]\n')
    env = {**world.env, "PIPEKEY_CONFIG": str(clean)}
    assert run_cli("set", "team/p/token", input="fake-x", env=env).returncode == 0
    done = run_cli("inventory", "--check", env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_inventory_fetches_no_value(world: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """Metadata calls only: every store's value read fails here, and the inventory is whole."""
    import pipekey
    from pipekey.backends.env import EnvBackend
    from pipekey.backends.local import LocalBackend
    from pipekey.inventory import build

    def no_read(self: object, keys: object) -> None:
        raise AssertionError("the inventory fetched a value")

    for cls in (LocalBackend, EnvBackend):
        monkeypatch.setattr(cls, "_get_many", no_read)
        monkeypatch.setattr(cls, "_get_version", no_read, raising=False)
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    with pipekey.load(world.manifest, env="dev") as lk:
        inv = build(lk, ["dev"])
    (dev,) = inv.envs
    assert not dev.errors
    assert dev.keys["finance/billing/stripe_key"].places[0].version == "1"
    assert [p.backend for p in dev.keys["ops/notify/webhook"].places] == ["env", "local"]


def test_rotate_after_is_validated_by_the_manifest_schema(tmp_path: Path) -> None:
    path = tmp_path / "pipekey.toml"
    path.write_text('rotate_after = "90 days"\n')
    with pytest.raises(ManifestError, match=r"rotate_after: must match"):
        load_manifest(path)
    path.write_text('[pipelines.p]\nscope = "a/p"\nrotate_after = 90\n')
    with pytest.raises(ManifestError, match=r"pipelines\.p\.rotate_after"):
        load_manifest(path)
    path.write_text('rotate_after = "90d"\n[pipelines.p]\nscope = "a/p"\nrotate_after = "2w"\n')
    manifest = load_manifest(path)
    assert manifest.rotate_after == "90d" and manifest.pipelines["p"].rotate_after == "2w"


def test_audit_index_reads_only_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    def append(*events: AuditEvent) -> None:
        with open(path, "a", encoding="utf-8") as f:
            for e in events:
                f.write(json.dumps(e.to_dict()) + "\n")

    append(AuditEvent("read", "a/b", "ok", pipeline="p", run="r1", time="2026-01-01T00:00:00"))
    index = AuditIndex(path).refresh()
    assert index.keys["a/b"].reads == 1
    offset = path.stat().st_size
    append(AuditEvent("read", "a/b", "ok", pipeline="p", run="r2", time="2026-01-02T00:00:00"),
           AuditEvent("deny", "a/b", "denied", pipeline="q", time="2026-01-02T00:00:01"))
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"event": "read", "key": "a/b", "outc')  # a line being written
    index.refresh()
    entry = index.keys["a/b"]
    assert (entry.reads, entry.denials, entry.runs) == (2, 1, [("p", "r1"), ("p", "r2")])
    assert dict(entry.per_day) == {"2026-01-01": 1, "2026-01-02": 1}
    assert index._files[path][1] > offset and index.events == 3
    with open(path, "a", encoding="utf-8") as f:
        f.write('ome": "ok", "pipeline": "p", "time": "2026-01-03T00:00:00"}\n')
    assert index.refresh().keys["a/b"].reads == 3
    path.write_text("")  # truncated: read again from the start
    assert "a/b" not in index.refresh().keys


def test_keys_of_a_pipeline_without_instances_are_not_orphans(
        tmp_path: Path, master_key: str) -> None:
    """A parameterised pipeline with no instances declares its keys as templates: a stored
    key its scope walk or a grant would read is used (policy.declaring), another is not."""
    import pipekey
    from pipekey.inventory import build
    from pipekey.policy import declaring

    path = tmp_path / "pipekey.toml"
    path.write_text('[pipelines.ads]\nscope = "ads/{account}"\nrequires = ["token"]\n'
                    'grants = ["reports/"]\n')
    with pipekey.load(path) as lk:
        for key in ("ads/acct_9/token", "ads/acct_9/other", "reports/q1", "elsewhere/x"):
            lk.set(key, "fake-v")
        inv = build(lk, ["dev"])
        assert lk.manifest is not None
        assert declaring("ads/acct_9/token", lk.manifest.pipelines, ["dev"]) == \
            {"ads": "requires token"}
        assert declaring("reports/q1", lk.manifest.pipelines, ["dev"]) == \
            {"ads": "grant reports/"}
        assert declaring("ads/acct_9/other", lk.manifest.pipelines, ["dev"]) == {}
    orphans = {f.key for f in inv.findings if f.kind == "orphan"}
    assert orphans == {"ads/acct_9/other", "elsewhere/x"}
    assert inv.envs[0].keys["ads/{account}/token"].state == "template"
