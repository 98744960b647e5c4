"""Short-lived AWS principals: a boto3 Session that assumes a role and refreshes itself.

Each pipeline run that names an ``aws_role`` gets its own Session (``run.aws_session()``),
with a session name derived from the pipeline and the run, so CloudTrail says which run did
what. Credentials refresh in the background of botocore's own ``RefreshableCredentials``
before they expire; the refresh window scales with the session length, so a 15-minute session
is not refreshed on every call. Nothing is written to ``os.environ``.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ._sdk import boto3_module
from .backends.aws_errors import AWS_ERRORS, attempts

if TYPE_CHECKING:
    from .manifest import AwsRole

__all__ = ["RunSession", "assumed_role_session", "session_name"]


def session_name(*parts: str) -> str:
    """An STS RoleSessionName (``[\\w+=,.@-]{2,64}``) from the given parts."""
    text = re.sub(r"[^\w+=,.@-]", "-", ".".join(p for p in parts if p))
    return (text or "pipekey")[:64].ljust(2, "-")


def assumed_role_session(role_arn: str, name: str, *, base_session: Any = None,
                         external_id: str | None = None, duration: int = 900,
                         tags: Mapping[str, str] | None = None, region: str | None = None,
                         clock: Callable[[], datetime] | None = None) -> Any:
    """A ``boto3.Session`` whose credentials come from ``sts:AssumeRole`` and refresh
    themselves before expiry.

    Args:
        role_arn: the role to assume.
        name: the RoleSessionName (sanitised to STS's rules).
        base_session: the session that calls STS (default: boto3's default chain).
        external_id, duration, tags: passed to AssumeRole (tags become session tags).
        clock: returns "now" as an aware datetime; for tests of the refresh.

    Raises:
        AccessDenied: STS refused to let this principal assume the role.
        BackendUnavailable: STS throttled, failed or could not be reached (``backend 'sts'``);
            the AWS error table words it, as for every AWS call.
    """
    boto3 = boto3_module()
    from botocore.credentials import RefreshableCredentials
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.session import get_session

    base = base_session or boto3.Session(region_name=region)
    sts = base.client("sts", region_name=region or base.region_name)
    request: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name(name),
                               "DurationSeconds": duration}
    if external_id:
        request["ExternalId"] = external_id
    if tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]

    def fetch() -> dict[str, str]:
        try:
            creds = sts.assume_role(**request)["Credentials"]
        except (ClientError, BotoCoreError) as exc:
            raise AWS_ERRORS.translate(exc, "sts", f"assume role {role_arn} as "
                                                   f"{request['RoleSessionName']!r}",
                                       attempts(exc)) from exc
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"], "expiry_time": creds["Expiration"].isoformat()}

    window = max(60, min(15 * 60, duration // 3))
    metadata = fetch()
    credentials = RefreshableCredentials(
        metadata["access_key"], metadata["secret_key"], metadata["token"],
        _parse(metadata["expiry_time"]), fetch, "sts-assume-role",
        advisory_timeout=window, mandatory_timeout=window // 2,
        **({"time_fetcher": clock} if clock else {}))
    botocore_session = get_session()
    # botocore has no public setter for refreshable credentials; this is the usual idiom.
    botocore_session._credentials = credentials
    return boto3.Session(botocore_session=botocore_session,
                         region_name=region or base.region_name)


class RunSession:
    """The assumed-role Session of one pipeline run: made on first use, then the same one for
    every later call of that run, until :meth:`clear`.

    The role is assumed with a session name made of the pipeline and the run name (unless the
    role names one), and session tags ``pipekey:pipeline`` / ``pipekey:run`` plus the
    manifest's.
    """

    def __init__(self, role: AwsRole, pipeline: str, run: str) -> None:
        self.role = role
        self.pipeline = pipeline
        self.run = run
        self._session: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The Session, assuming the role on the first call (one AssumeRole per run).

        Raises:
            AccessDenied: STS refused the role.
            BackendUnavailable: STS could not be reached.
        """
        with self._lock:
            if self._session is None:
                role = self.role
                tags = {"pipekey:pipeline": self.pipeline, "pipekey:run": self.run[:256],
                        **role.tags}
                self._session = assumed_role_session(
                    role.arn, role.session_name or f"{self.pipeline}.{self.run}",
                    external_id=role.external_id, duration=role.duration, tags=tags,
                    region=role.region)
            return self._session

    def clear(self) -> None:
        """Drop the Session (the run has ended)."""
        with self._lock:
            self._session = None


def _parse(text: str) -> datetime:
    from botocore.utils import parse_timestamp

    parsed: datetime = parse_timestamp(text)
    return parsed
