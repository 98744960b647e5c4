"""botocore's errors as pipekey's: one table for every AWS call pipekey makes (the three AWS
backends, and STS when a run or a backend assumes a role), most specific row first.

A module of its own, importing no SDK, so that :mod:`pipekey.aws` (which the backends import
to assume roles) uses the same table without an import cycle.
"""

from __future__ import annotations

from typing import Any, Sequence

from .remote import Cause, ErrorRow, ErrorTable

__all__ = ["AWS_ERRORS", "DENIED_CODES", "KMS_CODES", "THROTTLING_CODES", "attempts",
           "error_code"]

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "SlowDown", "RequestThrottled", "LimitExceededException", "BandwidthLimitExceeded",
    "PriorRequestNotComplete", "EC2ThrottledException", "TransactionInProgressException",
})
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                          "UnrecognizedClientException", "InvalidClientTokenId",
                          "ExpiredTokenException", "NotAuthorized"})
KMS_CODES = frozenset({"InvalidKeyId", "InvalidCiphertextException", "NotFoundException",
                       "DisabledException"})


def _response(exc: BaseException) -> dict[str, Any]:
    """The parsed answer a botocore ``ClientError`` carries ({} for any other exception)."""
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    return response


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` ("" for any other exception)."""
    code: str = _response(exc).get("Error", {}).get("Code", "")
    return code


def _aws_rows() -> Sequence[ErrorRow]:
    return (
        (lambda e: error_code(e) in DENIED_CODES, Cause.DENIED, None),
        (lambda e: error_code(e).startswith("KMS") or error_code(e) in KMS_CODES,
         Cause.KEY_REFUSED, None),
        (lambda e: error_code(e) in THROTTLING_CODES, Cause.THROTTLED, None),
        (lambda e: error_code(e) != "", Cause.FAILED, None),  # AWS answered with an error
        (lambda e: type(e).__name__ == "NoCredentialsError", Cause.NO_CREDENTIALS,
         "no credentials found"),
    )


#: botocore's errors as pipekey's, for the three AWS backends (and STS): by error code
AWS_ERRORS = ErrorTable("AWS", _aws_rows, error_code)


def attempts(exc: BaseException, default: int = 1) -> int:
    """How many attempts botocore made before raising ``exc`` (its retries, plus one)."""
    retries = _response(exc).get("ResponseMetadata", {}).get("RetryAttempts")
    return retries + 1 if isinstance(retries, int) else default
