"""The ``vault`` backend through hvac against the protocol-level Vault on 127.0.0.1:
logins shared by the process, renewal, one re-login on 403, the two layouts, check-and-set
under concurrent writers, retries of 429/5xx, and error shapes. The contract suite
(test_backend_contract.py) covers reads, lists, writes and history."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

import pipekey
from pipekey import AccessDenied, InvalidKey, ManifestError
from pipekey.backends.base import Versioned
from pipekey.backends.vault import (
    AppRoleAuth,
    AwsIamAuth,
    KubernetesAuth,
    TokenAuth,
    VaultBackend,
    VaultConfig,
    VaultLogin,
)
from pipekey.errors import BackendUnavailable, UsageError
from pipekey.testing import MemoryBackend

from ..extras import need
from ..fakes.vault import K8S_JWT, ROLE_ID, ROOT_TOKEN, SECRET_ID, FakeVault

need("vault")

APPROLE = AppRoleAuth(role_id=ROLE_ID)


def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def fresh_logins():
    """Each test starts with no process-wide Vault login (they are shared by design)."""
    VaultLogin._all.clear()
    yield
    VaultLogin._all.clear()


def vault(url: str | None = None, **fields) -> VaultBackend:
    fields.setdefault("auth", APPROLE)
    fields.setdefault("prefix", f"lk/{uid()}")
    return VaultBackend.build("vault", VaultConfig(type="vault", url=url, **fields))


@pytest.fixture
def own_vault(request, monkeypatch):
    """A separate fake Vault (for tests that change token TTLs or revoke tokens)."""
    server = FakeVault(**getattr(request, "param", {}))
    monkeypatch.setenv("VAULT_SECRET_ID", SECRET_ID)
    yield server
    server.stop()


def test_one_login_per_process_shared_by_backends(vault_env, fake_vault) -> None:
    """Two backends on the same Vault and auth, 40 reads: one AppRole login in all."""
    before = len(fake_vault.logins)
    a, b = vault(), vault()
    for i in range(20):
        a.put(f"k{i}", f"fake-{i}")
    assert len(a.get_many([f"k{i}" for i in range(20)])) == 20
    assert b.get_many([f"k{i}" for i in range(20)]) == {}
    assert len(fake_vault.logins) - before == 1
    assert a.login is b.login


def test_shared_login_keeps_each_backends_own_retries(vault_env, fake_vault) -> None:
    """Backends sharing a login keep their own retry settings and counters."""
    patient, hasty = vault(max_attempts=3), vault(max_attempts=1)
    patient.put("k", "fake-v")
    hasty.put("k", "fake-w")
    fake_vault.fail(429, times=1, route="v2_read", retry_after=0)
    assert patient.get("k").value == "fake-v"
    fake_vault.fail(429, times=1, route="v2_read", retry_after=0)
    with pytest.raises(BackendUnavailable, match="after 1 attempts"):
        hasty.get("k")
    assert (patient.stats["retries"], hasty.stats["retries"]) == (1, 0)
    assert patient.login is hasty.login


@pytest.mark.parametrize("own_vault", [{"token_ttl": 3}], indirect=True)
def test_token_renewed_before_expiry(own_vault) -> None:
    """Past two thirds of its TTL the token is renewed (renew-self), not re-logged-in, and
    reads never see a 403."""
    backend = vault(own_vault.url)
    backend.put("k", "fake-v")
    time.sleep(2.2)
    assert backend.get("k").value == "fake-v"
    assert own_vault.counts["renew_self"] == 1 and own_vault.logins == ["approle"]
    assert own_vault.counts["v2_read"] >= 2


@pytest.mark.parametrize("own_vault", [{"token_ttl": 3, "renewable": False}], indirect=True)
def test_unrenewable_token_replaced_by_a_new_login(own_vault) -> None:
    """A token that cannot be renewed is replaced by a fresh login before it expires."""
    backend = vault(own_vault.url)
    backend.put("k", "fake-v")
    time.sleep(2.2)
    assert backend.get("k").value == "fake-v"
    assert own_vault.logins == ["approle", "approle"] and own_vault.counts["renew_self"] == 0


def test_one_relogin_after_403(own_vault) -> None:
    """A revoked token gets one new login and the request is retried; once for all threads."""
    backend = vault(own_vault.url)
    for i in range(8):
        backend.put(f"k{i}", f"fake-{i}")
    own_vault.revoke_tokens()
    found = backend.get_many([f"k{i}" for i in range(8)])  # 8 concurrent reads, 8 403s
    assert len(found) == 8
    assert own_vault.logins == ["approle", "approle"]


def test_denied_path_is_access_denied_after_one_relogin(own_vault) -> None:
    """A path out of policy: 403, one login, 403 again -> AccessDenied, authoritative in the
    chain (the next backend is not asked), naming the backend and key, never the value."""
    backend = vault(own_vault.url, prefix="team")
    backend.put("locked/k", "fake-locked")
    own_vault.deny("secret/data/team/locked/*")
    later = MemoryBackend("later", {"locked/k": "fake-later"})
    with pytest.raises(AccessDenied, match="backend 'vault': Vault denied read for 'locked/k'"):
        pipekey.Pipekey([backend, later]).get("locked/k")
    assert later.calls == [] and own_vault.logins == ["approle", "approle"]


def test_throttling_and_5xx_retried_and_counted(vault_env, fake_vault) -> None:
    """429 (with Retry-After) and 503 on reads are retried by urllib3 and counted."""
    backend = vault()
    backend.put("k", "fake-v")
    fake_vault.fail(429, times=2, route="v2_read", retry_after=0)
    fake_vault.fail(503, times=1, route="v2_read")
    assert backend.get("k").value == "fake-v"
    assert backend.stats["retries"] == 3 and backend.stats["throttles"] == 2


@pytest.mark.parametrize("status, words", [(429, "throttled by Vault on read for 'k' "
                                                 "after 2 attempts (HTTP 429)"),
                                           (500, "read for 'k' failed (HTTP 500)"),
                                           (503, "read for 'k' failed (HTTP 503)")])
def test_errors_past_retries_are_clear_and_never_absent(vault_env, fake_vault, status,
                                                        words) -> None:
    """Once retries are spent the error names backend, key and status; it is not "absent"."""
    backend = vault(max_attempts=2)
    backend.put("k", "fake-secret-value")
    fake_vault.fail(status, times=2, route="v2_read")
    with pytest.raises(BackendUnavailable) as info:
        backend.get("k")
    assert words in str(info.value) and "backend 'vault'" in str(info.value)
    assert "fake-secret-value" not in str(info.value)


def test_unreachable_vault(monkeypatch) -> None:
    """A Vault that refuses connections is BackendUnavailable naming it."""
    from ..servers import free_port

    monkeypatch.setenv("VAULT_SECRET_ID", SECRET_ID)
    backend = vault(f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(BackendUnavailable, match="backend 'vault': cannot reach Vault"):
        backend.get("k")


def test_listing_a_tree_wider_than_the_pool(vault_env, fake_vault) -> None:
    """ls walks a tree with more folders per level than max_concurrency (the walk runs level
    by level from the caller's thread; recursing inside the pool would wait on itself)."""
    backend = vault(max_concurrency=2)
    keys = sorted(f"a{a}/b{b}/k" for a in range(3) for b in range(3))
    for key in keys:
        backend.put(key, "fake")
    fake_vault.reset_counts()
    assert backend.list_keys("") == keys
    assert fake_vault.counts["v2_list"] == 1 + 3 + 9


def test_document_layout_reads_a_scope_in_one_call(vault_env, fake_vault) -> None:
    """Keys that are fields of one document are read with one request, and a pipeline whose
    scope is that document opens with one read."""
    backend = vault(layout="document")
    for name in ("access_token", "app_secret", "app_id"):
        backend.put(f"ads/acct_42/{name}", f"fake-{name}")
    fake_vault.reset_counts()
    found = backend.get_many([f"ads/acct_42/{n}" for n in ("access_token", "app_secret",
                                                           "app_id")])
    assert {k.rsplit("/", 1)[1]: s.value for k, s in found.items()} == {
        "access_token": "fake-access_token", "app_secret": "fake-app_secret",
        "app_id": "fake-app_id"}
    assert fake_vault.counts["v2_read"] == 1
    assert found["ads/acct_42/app_id"].version == "3"  # the document's version
    assert backend.locate("ads/acct_42/app_id").endswith("ads/acct_42#app_id")


def test_document_layout_reads_documents_written_by_others(vault_env, fake_vault) -> None:
    """A Vault secret written with the Vault API (many fields, one JSON) answers per field;
    a non-string field comes back as JSON."""
    prefix = f"lk/{uid()}"
    import hvac

    client = hvac.Client(url=fake_vault.url, token=ROOT_TOKEN)
    client.secrets.kv.v2.create_or_update_secret(
        f"{prefix}/connections/warehouse",
        {"host": "db.example.invalid", "password": "fake-pw", "port": 5432})
    backend = vault(prefix=prefix, layout="document")
    found = backend.get_many(["connections/warehouse/password", "connections/warehouse/port"])
    assert found["connections/warehouse/password"].value == "fake-pw"
    assert found["connections/warehouse/port"].value == "5432"
    assert backend.list_keys("connections") == ["connections/warehouse/host",
                                           "connections/warehouse/password",
                                           "connections/warehouse/port"]


def test_concurrent_writers_lose_no_update(vault_env, fake_vault) -> None:
    """8 threads x 5 fields into one document: check-and-set makes losers re-read and retry,
    so all 40 fields are there and the document has exactly 40 versions."""
    backend = vault(layout="document", cas_attempts=200)
    fake_vault.reset_counts()

    def writer(t: int) -> None:
        for i in range(5):
            backend.put(f"doc/f{t}_{i}", f"fake-{t}-{i}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    found = backend.get_many([f"doc/f{t}_{i}" for t in range(8) for i in range(5)])
    assert len(found) == 40
    assert len(backend.history("doc/f0_0")) == 40
    assert fake_vault.counts["v2_write"] >= 40  # losers wrote again


def test_delete_in_document_layout_keeps_other_fields(vault_env) -> None:
    """Deleting one field rewrites the document without it; the last field deletes it."""
    backend = vault(layout="document")
    backend.put("doc/a", "fake-a")
    backend.put("doc/b", "fake-b")
    assert backend.delete("doc/a") is True and backend.delete("doc/a") is False
    assert backend.list_keys("") == ["doc/b"]
    assert backend.delete("doc/b") is True
    assert backend.list_keys("") == [] and backend.get("doc/b") is None


def test_document_layout_without_prefix_has_no_place_for_a_one_segment_key(vault_env) -> None:
    """A one-segment key has no document to live in: absent for reads, refused for writes."""
    backend = vault(prefix="", layout="document")
    assert backend.get("token") is None and backend.store_name("token") is None
    assert "no path for this key" in backend.locate("token")
    with pytest.raises(InvalidKey, match="'token'.*needs a parent segment"):
        backend.put("token", "fake-token-acct42")


def test_soft_delete_keeps_history_and_version_metadata(vault_env) -> None:
    """rm is KV v2's soft delete: the versions stay listed, the deleted one marked."""
    backend = vault()
    backend.put("k", "fake-1")
    backend.put("k", "fake-2")
    backend.delete("k")
    history = backend.history("k")
    assert [(v.version, v.deleted) for v in history] == [("1", False), ("2", True)]
    assert history[0].created_at is not None and history[0].created_at.tzinfo is not None
    assert backend.get_version("k", "1").value == "fake-1"
    assert backend.get_version("k", "2") is None
    assert backend.put("k", "fake-3").version == "3"


def test_kv1_refuses_document_writes(vault_env) -> None:
    """KV v1 has no check-and-set: a document-layout write is refused with the reason."""
    backend = vault(mount="kv", kv_version=1, layout="document")
    with pytest.raises(UsageError, match="KV v1 has no check-and-set"):
        backend.put("doc/a", "fake-a")
    assert not isinstance(backend, Versioned)


def test_token_auth_from_env(vault_env, monkeypatch) -> None:
    """The token method reads $VAULT_TOKEN; without it the error names the variable."""
    backend = vault(auth=TokenAuth())
    with pytest.raises(UsageError, match=r"no Vault token: set \$VAULT_TOKEN"):
        backend.get("k")
    VaultLogin._all.clear()
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    backend = vault(auth=TokenAuth())
    backend.put("k", "fake-v")
    assert backend.get("k").value == "fake-v"


def test_kubernetes_auth_reads_the_service_account_token(vault_env, fake_vault,
                                                         tmp_path: Path) -> None:
    """The kubernetes method sends the pod's JWT file with the role."""
    jwt = tmp_path / "token"
    jwt.write_text(K8S_JWT + "\n")
    backend = vault(auth=KubernetesAuth(role="etl", jwt_file=str(jwt)))
    backend.put("k", "fake-v")
    assert fake_vault.logins[-1] == "kubernetes"
    with pytest.raises(UsageError, match="cannot read the service-account token file"):
        VaultLogin._all.clear()
        vault(auth=KubernetesAuth(role="etl",
                                  jwt_file=str(tmp_path / "nope"))).get("k")


def test_aws_iam_auth_sends_a_signed_sts_request(vault_env, fake_vault, monkeypatch) -> None:
    """The aws method signs sts:GetCallerIdentity with the default AWS credentials."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing"}.items():
        monkeypatch.setenv(name, value)
    backend = vault(auth=AwsIamAuth(role="etl"))
    backend.put("k", "fake-v")
    assert fake_vault.logins[-1] == "aws"


def test_wrong_approle_secret_is_a_clear_error(vault_env, monkeypatch) -> None:
    """A rejected login says so and does not print the secret id."""
    monkeypatch.setenv("VAULT_SECRET_ID", "fake-wrong-secret-id")
    with pytest.raises(BackendUnavailable) as info:
        vault().get("k")
    assert "Vault refused the approle login (HTTP 400)" in str(info.value)
    assert "fake-wrong-secret-id" not in str(info.value)


def test_manifest_and_cli(vault_env, fake_vault, isolated: Path) -> None:
    """A manifest with a typed auth table builds the backend; the CLI reads and writes."""
    from ..conftest import run_cli

    (isolated / "pipekey.toml").write_text(
        f'chain = ["vault"]\n[backends.vault]\ntype = "vault"\nprefix = "lk/{uid()}/{{env}}"\n'
        f'layout = "document"\nauth = {{ method = "approle", role_id = "{ROLE_ID}" }}\n')
    assert run_cli("set", "shared/slack_token", input="fake-slack-cli").returncode == 0
    got = run_cli("get", "shared/slack_token", "--reveal")
    assert got.stdout.strip() == "fake-slack-cli"
    listed = json.loads(run_cli("ls", "--json").stdout)
    assert "shared/slack_token" in json.dumps(listed)
    doctor = run_cli("doctor")
    assert "KV v2 mount 'secret', document layout, auth approle" in doctor.stdout + doctor.stderr


def test_manifest_errors_name_the_field(isolated: Path) -> None:
    """An unknown auth method or a missing role_id is a ManifestError naming the field."""
    (isolated / "pipekey.toml").write_text(
        '[backends.v]\ntype = "vault"\nurl = "http://127.0.0.1:1"\nauth = { method = "ldap" }\n')
    with pytest.raises(ManifestError, match="auth"):
        pipekey.load()
    (isolated / "pipekey.toml").write_text(
        '[backends.v]\ntype = "vault"\nurl = "http://127.0.0.1:1"\n'
        'auth = { method = "approle" }\n')
    with pytest.raises(ManifestError, match="role_id"):
        pipekey.load()
