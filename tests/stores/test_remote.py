"""The reversible mapping of key paths onto store names without '/' (GCP, Azure)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipekey.backends.azure_key_vault import LITERAL as AZURE
from pipekey.backends.gcp_secret_manager import LITERAL as GCP
from pipekey.backends.remote import escape_name, unescape_name

segment = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1,
                  max_size=12).filter(lambda s: s not in (".", ".."))
keys = st.lists(segment, min_size=1, max_size=5).map("/".join)


@pytest.mark.parametrize("literal, allowed", [pytest.param(GCP, GCP + "-", id="gcp"),
                                              pytest.param(AZURE, AZURE + "-", id="azure")])
@given(a=keys, b=keys)
def test_mapping_is_reversible_and_injective(literal: str, allowed: str, a: str, b: str) -> None:
    """Every key maps to a name in the store's alphabet that maps back to it; two keys never
    share a name (also on Azure, where names are case-insensitive)."""
    name = escape_name(a, literal, 10_000, "test")
    assert set(name) <= set(allowed)
    assert unescape_name(name, literal) == a
    other = escape_name(b, literal, 10_000, "test")
    fold = str.lower if literal == AZURE else (lambda s: s)
    assert (fold(name) == fold(other)) == (a == b)


@pytest.mark.parametrize("name", ["Foreign-Name", "a-", "a-2", "a-zz", "-61", "a---b", ""])
def test_names_pipekey_did_not_write_map_to_none(name: str) -> None:
    """Names that are not the canonical form of a key are not read as keys."""
    assert unescape_name(name, GCP) is None


def test_examples_from_the_docs() -> None:
    """The examples in docs/backends.md hold."""
    assert escape_name("marketing/facebook/acct_42/access_token", GCP, 255, "gcp") == \
        "marketing--facebook--acct_42--access_token"
    assert escape_name("marketing/facebook/acct_42/access_token", AZURE, 127, "azure") == \
        "marketing--facebook--acct-5f42--access-5ftoken"
    assert escape_name("db.password", GCP, 255, "gcp", prefix="prod_") == "prod_db-2epassword"
