"""The ``azure_key_vault`` backend through azure-keyvault-secrets and azure-identity (MSAL,
client credentials) against the protocol-level Key Vault over TLS on 127.0.0.1: the auth
challenge, bounded concurrent reads, 429/5xx retries, error shapes, name mapping, soft
delete and recovery. The contract suite (test_backend_contract.py) covers the rest."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import pipekey
from pipekey import AccessDenied, InvalidKey
from pipekey.backends.azure_key_vault import AzureKeyVaultBackend, ClientSecretAuth
from pipekey.errors import BackendUnavailable, UsageError
from pipekey.testing import MemoryBackend

from ..extras import need
from ..fakes.azure import CLIENT_ID, CLIENT_SECRET, TENANT
from ..servers import azure_config

need("azure")


@pytest.fixture
def server(azure_env):
    azure_env.reset_counts()
    yield azure_env
    azure_env.latency = 0.0


def azure(server, **fields) -> AzureKeyVaultBackend:
    fields.setdefault("prefix", f"lk{uuid.uuid4().hex[:10]}-")
    return AzureKeyVaultBackend("azure", azure_config(server, **fields))


def test_one_token_for_many_requests(server) -> None:
    """The auth challenge is answered once; azure-identity's token serves every request."""
    backend = azure(server)
    for i in range(10):
        backend.put(f"k{i}", f"fake-{i}")
    assert len(backend.get_many([f"k{i}" for i in range(10)])) == 10
    assert server.counts["token"] == 1 and server.counts["openid"] <= 1


def test_batch_reads_bounded_concurrency(server) -> None:
    """30 keys are read concurrently, never more than max_concurrency at once."""
    backend = azure(server, max_concurrency=4)
    for i in range(30):
        backend.put(f"ads/k{i:02d}", f"fake-{i}")
    server.reset_counts()
    server.latency = 0.02
    found = backend.get_many([f"ads/k{i:02d}" for i in range(30)] + ["ads/missing"])
    assert len(found) == 30 and found["ads/k03"].value == "fake-3"
    assert server.counts["get_secret"] == 31
    assert 2 <= server.max_inflight <= 4
    server.reset_counts()
    assert len(backend.list_keys("ads")) == 30  # Key Vault pages by 25: nextLink followed
    assert server.counts["list_secrets"] >= 2


def test_throttling_and_5xx_retried_and_counted(server) -> None:
    """429 with Retry-After and 503 are retried by azure-core's policy and counted."""
    backend = azure(server)
    backend.put("k", "fake-v")
    server.fail(429, times=2, route="get_secret", retry_after=0)
    server.fail(503, route="get_secret")
    assert backend.get("k").value == "fake-v"
    assert backend.stats["retries"] == 3 and backend.stats["throttles"] == 2


def test_throttling_past_the_attempts_is_a_clear_error(server) -> None:
    """When 429s outlast max_attempts the error names backend and key; it is not absence."""
    backend = azure(server, max_attempts=2)
    backend.put("k", "fake-secret-v")
    server.fail(429, times=2, route="get_secret", retry_after=0)
    with pytest.raises(BackendUnavailable, match=r"throttled by Key Vault on read for 'k' "
                                                 r"after 2 attempts \(429") as info:
        backend.get("k")
    assert "fake-secret-v" not in str(info.value)


def test_forbidden_is_authoritative(server) -> None:
    """403 Forbidden is AccessDenied naming backend and key; the chain does not go on."""
    backend = azure(server)
    backend.put("locked", "fake-locked")
    server.deny(backend.escaped_name("locked"))
    later = MemoryBackend("later", {"locked": "fake-later"})
    with pytest.raises(AccessDenied, match=r"backend 'azure': Key Vault denied read for "
                                           r"'locked' \(403 Forbidden\)"):
        pipekey.Pipekey([backend, later]).get("locked")
    assert later.calls == []


def test_names_map_reversibly_and_case_safely(server) -> None:
    """Keys differing only in case, '_', '.', '-' get distinct names (Key Vault compares
    names without case) and list back; names pipekey did not write are skipped."""
    backend = azure(server, prefix="lkmap-", separator="")  # raw: names as written
    keys = ["Ab", "ab", "a_b", "a.b", "a-b", "a/b"]
    for key in keys:
        backend.put(key, f"fake-{key}")
    assert [backend.escaped_name(k) for k in keys] == [
        "lkmap--41b", "lkmap-ab", "lkmap-a-5fb", "lkmap-a-2eb", "lkmap-a-2db", "lkmap-a--b"]
    backend.client.set_secret("lkmap-Foreign-Name", "fake-foreign")
    assert backend.list_keys("") == sorted(keys)
    assert {k: s.value for k, s in backend.get_many(keys).items()} == {
        k: f"fake-{k}" for k in keys}


def test_set_after_rm_recovers_the_soft_deleted_secret(server) -> None:
    """rm soft-deletes; a later set recovers the secret (its versions come back) first."""
    backend = azure(server)
    first = backend.put("k", "fake-1")
    assert backend.delete("k") is True and backend.get("k") is None
    assert backend.delete("k") is False
    backend.put("k", "fake-2")
    assert backend.get("k").value == "fake-2"
    assert [v.version for v in backend.history("k")][0] == first.version
    assert server.counts["recover"] == 1


def test_too_long_name_is_refused_before_any_request(server) -> None:
    backend = azure(server)
    server.reset_counts()
    with pytest.raises(InvalidKey, match="Key Vault name would be"):
        backend.put("a_" * 60, "fake")
    assert backend.get("a_" * 60) is None  # no name: absent for reads, as any unmappable key
    assert "(no name for this key)" in backend.locate("a_" * 60)
    assert sum(server.counts.values()) == 0


def test_wrong_client_secret_is_a_clear_error(server, monkeypatch) -> None:
    """A rejected service principal says it could not authenticate, without the secret."""
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "fake-wrong-secret")
    with pytest.raises(BackendUnavailable, match="cannot authenticate to Key Vault for read "
                                                 r"for 'k' \(auth client_secret\)") as info:
        azure(server, max_attempts=1).get("k")
    assert "fake-wrong-secret" not in str(info.value)


def test_no_client_secret_names_the_variable(server, monkeypatch) -> None:
    monkeypatch.delenv("AZURE_CLIENT_SECRET")
    with pytest.raises(UsageError, match=r"no client secret: set \$AZURE_CLIENT_SECRET"):
        azure(server).get("k")


def test_manifest_and_cli(server, isolated: Path) -> None:
    """A manifest section with a typed auth table builds the backend; the CLI writes and
    reads; no secret (the client secret included) shows in any output."""
    from ..conftest import run_cli

    (isolated / "pipekey.toml").write_text(
        f'chain = ["kv"]\n[backends.kv]\ntype = "azure_key_vault"\nurl = "{server.url}"\n'
        f'prefix = "lk{uuid.uuid4().hex[:8]}-{{env}}-"\nca_bundle = "{server.cert}"\n'
        'verify_challenge_resource = false\n'
        f'auth = {{ method = "client_secret", tenant_id = "{TENANT}", client_id = "{CLIENT_ID}",'
        f' authority = "{server.url}", disable_instance_discovery = true }}\n')
    results = [run_cli("set", "shared/api_key", input="fake-azure-cli"),
               run_cli("get", "shared/api_key", "--reveal"),
               run_cli("doctor"), run_cli("ls")]
    assert [r.returncode for r in results[:2]] == [0, 0]
    assert results[1].stdout.strip() == "fake-azure-cli"
    assert "azure_key_vault (https://127.0.0.1" in results[2].stdout + results[2].stderr
    assert "shared/api_key" in results[3].stdout
    everything = "".join(r.stdout + r.stderr for r in results[2:] + results[:1])
    assert "fake-azure-cli" not in everything and CLIENT_SECRET not in everything



def test_auth_config_is_typed() -> None:
    """An auth table missing a field is refused naming it."""
    with pytest.raises(TypeError, match="client_id"):
        ClientSecretAuth(tenant_id=TENANT)  # type: ignore[call-arg]
