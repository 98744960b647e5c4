"""A kind of credential is one entry of ``CREDENTIAL_TYPES``: a kind added there alone is
validated by the manifest (its fields, its keys, its unreadable keys, its own problems) and
minted by a run, with no other code knowing it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, Mapping

import pytest

import pipekey
from pipekey import Connection, ManifestError
from pipekey.credentials import (
    CREDENTIAL_TYPES,
    CredentialConfig,
    CredentialKind,
    Lease,
    MintContext,
    Minter,
)
from pipekey.manifest import load_manifest
from pipekey.policy import fill_template


class TokenConfig(CredentialConfig, kw_only=True, forbid_unknown_fields=True):
    """A made-up kind: a token minted from a signing key, only by a ``files`` backend."""

    type: Literal["fake_token"]
    signer: str
    backend: str

    def keys(self) -> dict[str, str]:
        return {"signer": self.signer}

    def unreadable(self) -> tuple[str, ...]:
        return ("signer",)

    def problem(self, backends: Mapping[str, str]) -> tuple[str, str] | None:
        if backends.get(self.backend) != "env":
            return "backend", f"{self.backend!r} is not an env backend"
        return None


class TokenMinter:
    """Mints ``fake-token-<run>`` connections; records what it was given."""

    built: list[TokenMinter] = []

    def __init__(self, name: str, config: TokenConfig, context: MintContext,
                 env: str) -> None:
        self.name, self.config, self.context, self.env = name, config, context, env
        self.signer = fill_template(config.signer, {"env": env}, "signer")
        self.inputs: list[Mapping[str, str] | None] = []
        self.revoked: list[str] = []
        TokenMinter.built.append(self)

    @property
    def reads(self) -> list[str]:
        return [self.signer]

    def mint(self, pipeline: str, run_id: str,
             inputs: Mapping[str, str] | None = None) -> Lease:
        self.inputs.append(inputs)
        login = f"fake_{pipeline}"
        conn = Connection(conn_type="http", host="127.0.0.1", login=login,
                          password=f"fake-token-{run_id}")
        return Lease(self.name, login, conn, time.time() + 600)

    def renew(self, lease: Lease) -> Lease:
        return lease

    def revoke(self, lease: Lease) -> None:
        self.revoked.append(lease.login)

    def sweep(self, dry_run: bool = False) -> list[str]:
        return []

    def close(self) -> None:
        pass


HEAD = """
[backends.env]
type = "env"
[backends.local]
type = "local"
"""
DEFINITION = """
[credentials.api]
type = "fake_token"
signer = "signing/api_{env}"
backend = "env"
"""
PIPE = """
[pipelines.loader]
scope = "loader"
connections = { api = "dynamic:api" }
"""


@pytest.fixture
def fake_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The made-up kind, registered in CREDENTIAL_TYPES for this test only."""
    monkeypatch.setitem(CREDENTIAL_TYPES, "fake_token", CredentialKind(
        TokenConfig, f"{__name__}:TokenMinter"))
    TokenMinter.built.clear()


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "pipekey.toml"
    path.write_text(HEAD + text)
    return path


def test_an_unregistered_kind_is_refused(isolated: Path) -> None:
    """Without its entry the kind is unknown, and the error lists the registry's kinds."""
    with pytest.raises(ManifestError, match=r"credentials\.api\.type: unknown credential type "
                                            r"'fake_token' \(known: postgres_role, "
                                            r"vault_database\)"):
        load_manifest(_write(isolated, DEFINITION + PIPE))


def test_a_kind_added_to_the_registry_alone_loads_and_mints(
        isolated: Path, fake_kind: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest converts the table to the kind's Struct; a run builds the kind's minter
    with the client as its MintContext, passes it the key it reads (read in the run's pass,
    ``{env}`` filled) and revokes at close."""
    _write(isolated, DEFINITION + PIPE)
    monkeypatch.setenv("PIPEKEY__SIGNING__API_DEV", "fake-signing-key")
    lk = pipekey.load(env="dev")
    assert isinstance(lk.manifest.credentials["api"], TokenConfig)  # type: ignore[union-attr]
    with lk.pipeline("loader", run_name="r1") as run:
        conn = run.connection("api")
        assert (conn.login, conn.password) == ("fake_loader", "fake-token-r1")
    [minter] = TokenMinter.built
    assert isinstance(minter, Minter) and minter.context is lk and minter.env == "dev"
    assert minter.inputs == [{"signing/api_dev": "fake-signing-key"}]
    assert minter.revoked == ["fake_loader"]


@pytest.mark.parametrize("text, where, says", [
    pytest.param(DEFINITION.replace("_{env}", "_{account}"), "credentials.api.signer",
                 "only {env}", id="keys-take-only-env"),
    pytest.param(DEFINITION.replace('backend = "env"', 'backend = "local"'),
                 "credentials.api.backend", "'local' is not an env backend",
                 id="the-kinds-own-problem"),
    pytest.param(DEFINITION.replace('backend = "env"', 'backend = "env"\nttl = 5'),
                 "credentials.api.ttl", "unknown field", id="its-struct-forbids-unknown"),
    pytest.param(DEFINITION.replace("signing/api", "shared/api"), "credentials.api.signer",
                 "under shared/", id="unreadable-key-under-shared"),
    pytest.param(DEFINITION.replace("signing/api", "loader/api") + PIPE,
                 "credentials.api.signer", "readable by pipeline 'loader'",
                 id="unreadable-key-in-a-scope"),
])
def test_a_registered_kind_is_checked_through_its_methods(
        isolated: Path, fake_kind: None, text: str, where: str, says: str) -> None:
    """What the manifest checks for the kind comes from its Struct's methods: one line
    naming credentials.NAME.field."""
    with pytest.raises(ManifestError) as info:
        load_manifest(_write(isolated, text))
    message = str(info.value)
    assert f": {where}: " in message and says in message and "\n" not in message
