"""The Vault, GCP Secret Manager and Azure Key Vault backends against the real services.

Each runs only when its address is set in the environment, and is skipped with the reason
otherwise (``pytest -ra`` prints it):

* Vault: ``VAULT_ADDR`` and ``VAULT_TOKEN`` (a token allowed to write under the KV v2 mount
  ``$VAULT_KV_MOUNT``, default ``secret``).
* GCP: ``GOOGLE_CLOUD_PROJECT`` and Application Default Credentials that can create secrets.
* Azure: ``AZURE_KEYVAULT_URL`` and credentials ``DefaultAzureCredential`` finds, with
  get/set/list/delete (and recover) permissions.

Every test works under a fresh prefix and removes what it wrote.
"""

from __future__ import annotations

import os
import uuid

import pytest

from pipekey.backends import Backend

# read at import, before any fixture changes the environment
LIVE = {name: os.environ.get(name, "") for name in
        ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_KV_MOUNT", "GOOGLE_CLOUD_PROJECT",
         "AZURE_KEYVAULT_URL")}


def _vault() -> Backend:
    from pipekey.backends.vault import VaultBackend, VaultConfig

    return VaultBackend.build("live-vault", VaultConfig(
        type="vault", url=LIVE["VAULT_ADDR"], mount=LIVE["VAULT_KV_MOUNT"] or "secret",
        prefix=f"pipekey-live/{uuid.uuid4().hex[:10]}"))


def _gcp() -> Backend:
    from pipekey.backends.gcp_secret_manager import GcpSecretManagerBackend, GcpSecretManagerConfig

    return GcpSecretManagerBackend("live-gcp", GcpSecretManagerConfig(
        type="gcp_secret_manager", project=LIVE["GOOGLE_CLOUD_PROJECT"],
        prefix=f"pipekey_live_{uuid.uuid4().hex[:10]}_", labels={"pipekey-live": "1"}))


def _azure() -> Backend:
    from pipekey.backends.azure_key_vault import AzureKeyVaultBackend, AzureKeyVaultConfig

    return AzureKeyVaultBackend("live-azure", AzureKeyVaultConfig(
        type="azure_key_vault", url=LIVE["AZURE_KEYVAULT_URL"],
        prefix=f"lklive{uuid.uuid4().hex[:10]}-"))


STORES = [
    pytest.param(_vault, id="vault", marks=pytest.mark.skipif(
        not (LIVE["VAULT_ADDR"] and LIVE["VAULT_TOKEN"]),
        reason="live Vault suite: set VAULT_ADDR and VAULT_TOKEN to run it")),
    pytest.param(_gcp, id="gcp_secret_manager", marks=pytest.mark.skipif(
        not LIVE["GOOGLE_CLOUD_PROJECT"],
        reason="live GCP suite: set GOOGLE_CLOUD_PROJECT (and ADC credentials) to run it")),
    pytest.param(_azure, id="azure_key_vault", marks=pytest.mark.skipif(
        not LIVE["AZURE_KEYVAULT_URL"],
        reason="live Azure suite: set AZURE_KEYVAULT_URL (and Azure credentials) to run it")),
]


@pytest.mark.live
@pytest.mark.parametrize("make", STORES)
def test_round_trip_against_the_real_service(make, monkeypatch) -> None:
    """Write, batch-read, list, version and delete under a fresh prefix, then clean up."""
    for name in ("VAULT_TOKEN", "VAULT_ADDR"):
        if LIVE[name]:
            monkeypatch.setenv(name, LIVE[name])
    backend = make()
    keys = {"shared/slack_token": "fake-live-1", "ads/acct_42/access.token": "fake-live-2"}
    try:
        for key, value in keys.items():
            backend.put(key, value)
        second = backend.put("shared/slack_token", "fake-live-3")
        found = backend.get_many([*keys, "shared/missing"])
        assert {k: s.value for k, s in found.items()} == {**keys,
                                                          "shared/slack_token": "fake-live-3"}
        assert backend.list_keys("") == sorted(keys)
        assert backend.list_keys("ads") == ["ads/acct_42/access.token"]
        history = backend.history("shared/slack_token")
        assert history[-1].version == second.version and len(history) >= 2
        assert backend.get_version("shared/slack_token", history[0].version).value == "fake-live-1"
        assert backend.check().startswith("ok")
    finally:
        for key in keys:
            backend.delete(key)
    assert backend.get_many(list(keys)) == {}
