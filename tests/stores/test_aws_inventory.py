"""The inventory over AWS stores (moto over HTTP) asks metadata alone: building it and
rendering a key page makes no call whose response carries a value, SSM String plaintext,
SecureString or DynamoDB ciphertext included."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest

import pipekey
from pipekey.backends.aws_ssm import SsmBackend, SsmConfig
from pipekey.backends.dynamodb import DynamoDbBackend, DynamoDbConfig
from pipekey.manifest import parse_manifest
from tests.extras import need

REGION = "eu-central-1"
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
PLAIN = "fake-plain-string-value-4711"
SECURE = "fake-secure-string-value-4712"
DDB = "fake-dynamodb-value-4713"
#: operations whose responses carry values (or their ciphertext)
VALUE_CALLS = {"GetParametersByPath", "GetParameterHistory", "GetParameter", "GetParameters",
               "BatchGetItem", "GetSecretValue"}


@pytest.fixture
def responses(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(operation, repr of its response) of every AWS call, as botocore returned it."""
    seen: list[tuple[str, str]] = []
    call = botocore.client.BaseClient._make_api_call

    def spy(self: Any, operation: str, params: dict[str, Any]) -> Any:
        response = call(self, operation, params)
        seen.append((operation, repr(response)))
        return response

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    return seen


def test_inventory_and_key_page_read_metadata_alone(aws_env: str, moto: Any,
                                                    responses: list[tuple[str, str]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    need("ui")
    from pipekey.ui.app import InventorySource, create_app
    from tests.integrations.test_inventory_ui import _get, _serving

    prefix = f"/lk/{uuid.uuid4().hex[:10]}"
    ssm = SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=prefix, region=REGION,
                                      endpoint_url=aws_env))
    ddb = DynamoDbBackend("ddb", DynamoDbConfig(
        type="dynamodb", table=f"lk-{uuid.uuid4().hex[:10]}", region=REGION,
        endpoint_url=aws_env), master_key=KEY)
    ddb.ensure_table()
    client = boto3.client("ssm", region_name=REGION, endpoint_url=aws_env)
    for version in ("1", "2"):  # a String: SSM returns it in plaintext wherever it returns it
        client.put_parameter(Name=f"{prefix}/ads/plain", Value=f"{PLAIN}-{version}",
                             Type="String", Overwrite=True)
    ssm.put("ads/secure", SECURE)
    ddb.put("ads/stored", DDB)
    ddb.put("ads/stored", DDB + "-2")
    manifest = parse_manifest({"pipelines": {"ads": {
        "scope": "ads", "requires": ["plain", "secure", "stored", "absent"]}}},
        Path("m.toml"))
    lk = pipekey.Pipekey([ssm, ddb], manifest=manifest)
    with _serving(create_app(InventorySource(lk, ["dev"]))) as base:
        moto.reset()
        responses.clear()
        status, matrix = _get(f"{base}/")
        pages = [_get(f"{base}/key/ads/{name}") for name in ("plain", "secure", "stored")]

    assert status == 200 and 'data-key="ads/plain"' in matrix.decode()
    assert [p[0] for p in pages] == [200] * 3
    plain, _, stored = (p[1].decode() for p in pages)
    assert 'id="versions"' in plain and "<td>ssm</td><td>2</td>" in plain  # SSM's version
    assert "<td>ddb</td><td>2</td>" in stored  # DynamoDB's history, metadata projected
    assert not VALUE_CALLS & set(moto.counts), dict(moto.counts)
    assert "DescribeParameters" in moto.counts and "GetItem" in moto.counts
    for operation, response in responses:
        for value in (PLAIN, SECURE, DDB):
            assert value not in response, operation
        assert "'ct'" not in response, operation  # DynamoDB's ciphertext attribute
    lk.close()
