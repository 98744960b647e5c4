"""SDK errors become pipekey errors through one table per SDK family (botocore, hvac,
google-api-core, azure-core), most specific row first, and one wording per cause: the same
cause reads the same from every store."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from pipekey.backends.remote import Cause, ErrorTable
from pipekey.errors import AccessDenied, BackendUnavailable

from ..extras import need


def _aws(code: str) -> tuple[ErrorTable, Exception]:
    from botocore.exceptions import ClientError

    from pipekey.backends.aws_common import AWS_ERRORS

    error = {"Error": {"Code": code, "Message": "fake-msg"}}
    return AWS_ERRORS, ClientError(error, "GetParameters")  # type: ignore[arg-type]


def _vault(name: str) -> tuple[ErrorTable, Exception]:
    hvac = need("vault")

    from pipekey.backends.vault_client import VAULT_ERRORS

    return VAULT_ERRORS, getattr(hvac.exceptions, name)("fake-msg")


def _gcp(name: str) -> tuple[ErrorTable, Exception]:
    need("gcp")
    from google.api_core import exceptions as gexc

    from pipekey.backends.gcp_secret_manager import GCP_ERRORS

    return GCP_ERRORS, getattr(gexc, name)("fake-msg")


def _azure(status: int) -> tuple[ErrorTable, Exception]:
    need("azure")
    from azure.core.exceptions import HttpResponseError

    from pipekey.backends.azure_key_vault import AZURE_ERRORS

    exc = HttpResponseError(message="fake-msg")
    exc.status_code = status
    return AZURE_ERRORS, exc


THROTTLED: list[Any] = [
    pytest.param(lambda: _aws("ThrottlingException"), "AWS", id="aws"),
    pytest.param(lambda: _vault("RateLimitExceeded"), "Vault", id="vault"),
    pytest.param(lambda: _gcp("TooManyRequests"), "GCP", id="gcp"),
    pytest.param(lambda: _azure(429), "Key Vault", id="azure"),
]
DENIED: list[Any] = [
    pytest.param(lambda: _aws("AccessDeniedException"), "AWS", id="aws"),
    pytest.param(lambda: _vault("Forbidden"), "Vault", id="vault"),
    pytest.param(lambda: _gcp("Forbidden"), "GCP", id="gcp"),
    pytest.param(lambda: _azure(403), "Key Vault", id="azure"),
]


@pytest.mark.parametrize("make, store", THROTTLED)
def test_throttling_reads_the_same_from_every_store(
        make: Callable[[], tuple[ErrorTable, Exception]], store: str) -> None:
    """Throttling that outlasted the retries is BackendUnavailable worded one way for every
    family: store, what was asked, the attempts, the SDK's code; never the SDK's message."""
    table, exc = make()
    error = table.translate(exc, "b", "read for 'k'", 3)
    assert type(error) is BackendUnavailable
    assert str(error).startswith(f"backend 'b': throttled by {store} on read for 'k' after 3 "
                                 "attempts (")
    assert "fake-msg" not in str(error)


@pytest.mark.parametrize("make, store", DENIED)
def test_denial_is_access_denied_from_every_store(
        make: Callable[[], tuple[ErrorTable, Exception]], store: str) -> None:
    """A refusal is AccessDenied (authoritative) worded one way for every family."""
    table, exc = make()
    error = table.translate(exc, "b", "read for 'k'", 3)
    assert type(error) is AccessDenied
    assert str(error).startswith(f"backend 'b': {store} denied read for 'k' (")
    assert "fake-msg" not in str(error)


def test_first_matching_row_decides_and_the_rest_is_unreachable() -> None:
    """Rows are tried in order (the most specific first); an exception no row matches is
    "cannot reach", with its class name only."""
    table = ErrorTable("Store", lambda: [
        (lambda e: isinstance(e, KeyError), Cause.DENIED, "specific"),
        (lambda e: isinstance(e, LookupError), Cause.FAILED, None)], lambda e: "general")
    assert str(table.translate(KeyError("fake-v"), "b", "read", 2)) == \
        "backend 'b': Store denied read (specific)"
    assert str(table.translate(IndexError("fake-v"), "b", "read", 2)) == \
        "backend 'b': read failed (general)"
    assert str(table.translate(OSError("fake-v"), "b", "read", 2)) == \
        "backend 'b': cannot reach Store for read (OSError)"
