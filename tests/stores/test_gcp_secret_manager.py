"""The ``gcp_secret_manager`` backend through google-cloud-secret-manager (REST transport,
anonymous credentials) against the protocol-level Secret Manager on 127.0.0.1: concurrent
batch reads, 429 and 5xx retries, error shapes, names, labels, pinned versions, checksums.
The contract suite (test_backend_contract.py) covers reads, lists, writes and history."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import pipekey
from pipekey import AccessDenied
from pipekey.backends.gcp_secret_manager import GcpSecretManagerBackend, GcpSecretManagerConfig
from pipekey.errors import BackendUnavailable, StoreCorrupt, UsageError
from pipekey.testing import MemoryBackend

from ..extras import need

need("gcp")


def gcp(server, **fields) -> GcpSecretManagerBackend:
    fields.setdefault("prefix", f"lk{uuid.uuid4().hex[:10]}_")
    return GcpSecretManagerBackend("gcp", GcpSecretManagerConfig(
        type="gcp_secret_manager", project="lk-test", endpoint=server.url,
        credentials="anonymous", **fields))


@pytest.fixture
def server(fake_gcp):
    fake_gcp.reset_counts()
    yield fake_gcp
    fake_gcp.latency = 0.0


def test_batch_reads_are_concurrent_and_bounded(server) -> None:
    """40 keys: one access request each, several in flight at once, never more than
    max_concurrency."""
    backend = gcp(server, max_concurrency=6)
    for i in range(40):
        backend.put(f"ads/k{i:02d}", f"fake-{i}")
    server.reset_counts()
    server.latency = 0.02
    found = backend.get_many([f"ads/k{i:02d}" for i in range(40)] + ["ads/missing"])
    assert len(found) == 40 and found["ads/k07"].value == "fake-7"
    assert server.counts["access"] == 41
    assert 2 <= server.max_inflight <= 6


def test_listing_follows_every_page(server) -> None:
    """ls over more secrets than one page (250) follows nextPageToken to the end."""
    backend = gcp(server)
    for i in range(260):
        backend.put(f"many/k{i:03d}", "fake")
    server.reset_counts()
    assert len(backend.list_keys("many")) == 260
    assert server.counts["list_secrets"] == 2


def test_429_is_retried_and_counted(server) -> None:
    """HTTP 429 (RESOURCE_EXHAUSTED), which the SDK's default policy does not retry on the
    REST transport, is retried with backoff; retries and throttles are counted."""
    backend = gcp(server)
    backend.put("k", "fake-v")
    server.reset_counts()
    server.fail(429, times=2, route="access")
    assert backend.get("k").value == "fake-v"
    assert server.counts["access"] == 3
    assert backend.stats["retries"] == 2 and backend.stats["throttles"] == 2


def test_5xx_retried_on_reads_not_on_writes(server) -> None:
    """500/503 on a read is retried; a 500 on addVersion is not (it may have been applied)."""
    backend = gcp(server)
    backend.put("k", "fake-v")
    server.fail(500, route="access")
    server.fail(503, route="access")
    assert backend.get("k").value == "fake-v"
    server.reset_counts()
    server.fail(500, route="add_version")
    with pytest.raises(BackendUnavailable, match=r"write for 'k' failed \(500 INTERNAL\)"):
        backend.put("k", "fake-w")
    assert server.counts["add_version"] == 1
    assert backend.get("k").value == "fake-v"


def test_429_past_the_attempts_is_a_clear_error_not_absent(server) -> None:
    """When 429s outlast max_attempts the error names backend, key and the attempts."""
    backend = gcp(server, max_attempts=2)
    backend.put("k", "fake-v")
    server.fail(429, times=2, route="access")
    with pytest.raises(BackendUnavailable, match="throttled by GCP on read for 'k' after 2 "
                                                 r"attempts \(429"):
        backend.get("k")


def test_permission_denied_is_authoritative(server) -> None:
    """403 PERMISSION_DENIED is AccessDenied naming backend and key; the chain stops."""
    backend = gcp(server)
    backend.put("locked", "fake-locked")
    server.deny(backend.escaped_name("locked"))
    later = MemoryBackend("later", {"locked": "fake-later"})
    with pytest.raises(AccessDenied, match=r"backend 'gcp': GCP denied read for 'locked' \(403"):
        pipekey.Pipekey([backend, later]).get("locked")
    assert later.calls == []


def test_names_are_mapped_reversibly(server) -> None:
    """Keys with '/', '.' and '-' become valid secret ids and list back as the same keys;
    secrets with ids pipekey did not write are skipped."""
    backend = gcp(server, prefix="lkmap_", separator="")  # raw: names as written
    keys = ["a/b.c-d", "a/b_c/d", "a/b-c/d", "x"]
    for key in keys:
        backend.put(key, f"fake-{key}")
    assert backend.escaped_name("a/b.c-d") == "lkmap_a--b-2ec-2dd"
    import google.cloud.secretmanager as sm
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    raw = sm.SecretManagerServiceClient(credentials=AnonymousCredentials(), transport="rest",
                                        client_options=ClientOptions(api_endpoint=server.url))
    raw.create_secret(parent="projects/lk-test", secret_id="lkmap_Foreign-Name",
                      secret={"replication": {"automatic": {}}})
    assert backend.list_keys("") == sorted(keys)
    assert {k: s.value for k, s in backend.get_many(keys).items()} == {
        k: f"fake-{k}" for k in keys}


def test_prefix_is_joined_like_a_path(server) -> None:
    """A prefix is one path segment: joined by '--' (how '/' is written), trailing '--' or
    not; separator = "" joins raw."""
    base = f"lk{uuid.uuid4().hex[:10]}"
    assert gcp(server, prefix=base).escaped_name("a/b") == f"{base}--a--b"
    assert gcp(server, prefix=base + "--").escaped_name("a/b") == f"{base}--a--b"
    assert gcp(server, prefix=base + "_", separator="").escaped_name("a/b") == f"{base}_a--b"
    backend = gcp(server, prefix=base)
    backend.put("a/b", "fake-joined")
    assert backend.list_keys("") == ["a/b"]
    assert gcp(server, prefix=base + "--").get("a/b").value == "fake-joined"


def test_labels_are_set_and_filter_listing(server) -> None:
    """Secrets are created with the backend's labels; list shows only labelled secrets."""
    prefix = f"lk{uuid.uuid4().hex[:10]}_"
    labelled = gcp(server, prefix=prefix, labels={"team": "data"})
    plain = gcp(server, prefix=prefix)
    labelled.put("mine", "fake-1")
    plain.put("other", "fake-2")
    assert labelled.list_keys("") == ["mine"]
    assert plain.list_keys("") == ["mine", "other"]
    assert server.secrets[f"lk-test/{labelled.escaped_name('mine')}"]["labels"] == {"team": "data"}


def test_pinned_version(server) -> None:
    """version = "1" reads the first version even after a newer one was added."""
    prefix = f"lk{uuid.uuid4().hex[:10]}_"
    writer = gcp(server, prefix=prefix)
    writer.put("k", "fake-1")
    writer.put("k", "fake-2")
    assert gcp(server, prefix=prefix, version="1").get("k").value == "fake-1"
    assert writer.get("k").value == "fake-2"
    with pytest.raises(ValueError, match="'latest' or a version number"):
        GcpSecretManagerConfig(type="gcp_secret_manager", version="newest")


def test_destroyed_versions(server) -> None:
    """A destroyed past version reads None and shows as deleted in history; a destroyed
    *latest* version is an error, never an absence."""
    backend = gcp(server)
    backend.put("k", "fake-1")
    backend.put("k", "fake-2")
    backend.client.destroy_secret_version(name=f"{backend.secret_path('k')}/versions/1")
    assert backend.get_version("k", "1") is None
    assert [(v.version, v.deleted) for v in backend.history("k")] == [("1", True), ("2", False)]
    backend.client.destroy_secret_version(name=f"{backend.secret_path('k')}/versions/2")
    with pytest.raises(BackendUnavailable,
                       match=r"read for 'k' failed \(400 FAILED_PRECONDITION\)"):
        backend.get("k")


def test_checksum_mismatch_is_store_corrupt(server) -> None:
    """A payload whose CRC32C does not match is StoreCorrupt naming the key, not a value."""
    backend = gcp(server)
    backend.put("k", "fake-v")
    server.corrupt.add(backend.escaped_name("k"))
    with pytest.raises(StoreCorrupt, match="'k' failed its CRC32C check"):
        backend.get("k")
    assert backend.get("k").value == "fake-v"


def test_too_long_name_is_an_invalid_key(server) -> None:
    """A key whose secret id would pass 255 characters is refused before any request."""
    backend = gcp(server)
    server.reset_counts()
    with pytest.raises(pipekey.InvalidKey, match="255"):
        backend.put("a/" + "b." * 130, "fake")
    assert backend.get("a/" + "b." * 130) is None  # no name: absent for reads
    assert backend.history("a/" + "b." * 130) == []
    assert sum(server.counts.values()) == 0


def test_no_project_is_a_usage_error(monkeypatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    with pytest.raises(UsageError, match=r"no GCP project: set project or \$GOOGLE_CLOUD_PROJECT"):
        GcpSecretManagerBackend("gcp", GcpSecretManagerConfig(type="gcp_secret_manager"))


def test_manifest_and_cli(server, isolated: Path) -> None:
    """A manifest section builds the backend ({env} in the prefix); the CLI writes, reads,
    lists and shows history."""
    from ..conftest import run_cli

    prefix = f"lk{uuid.uuid4().hex[:8]}_{{env}}_"
    (isolated / "pipekey.toml").write_text(
        f'chain = ["gcp"]\n[backends.gcp]\ntype = "gcp_secret_manager"\nproject = "lk-test"\n'
        f'prefix = "{prefix}"\nendpoint = "{server.url}"\ncredentials = "anonymous"\n')
    for value in ("fake-gcp-1", "fake-gcp-2"):
        assert run_cli("set", "shared/api.key", input=value).returncode == 0
    assert run_cli("get", "shared/api.key", "--reveal").stdout.strip() == "fake-gcp-2"
    listed = run_cli("ls", "--json")
    assert "shared/api.key" in listed.stdout
    history = json.loads(run_cli("history", "shared/api.key", "--json").stdout)
    assert [v["version"] for v in history["versions"]] == ["1", "2"]
    assert any(name.startswith(prefix.replace("{env}", "dev")) for name in server.secrets
               for name in [name.partition("/")[2]])
