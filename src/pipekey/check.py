"""``pipekey check``: does every pipeline have what it needs, and do its connections work?

For each pipeline (and each of its ``instances``, the parameter sets it runs with), every
required and optional secret and every connection is resolved in one batched pass, and each
is reported ``ok``, ``missing``, ``forbidden`` (the store refused), ``invalid`` (a connection
that does not parse), ``error`` (the store failed) or ``skipped``. With ``connect=True`` each
connection is also really opened (see :mod:`pipekey.probes`), concurrently and with a timeout.
Messages never contain a value: every value resolved is scrubbed from them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from .client import Pipekey
from .connection import Connection, InvalidConnection, host_userinfo, scrub_urls
from .errors import AccessDenied, PipekeyError, UsageError
from .parameters import problem as parameter_problem
from .redact import Redactor
from .run import CREDENTIAL_INPUT, Run

if TYPE_CHECKING:
    from .manifest import PipelineConfig

__all__ = ["Finding", "FAILING", "check_pipelines", "parameter_finding", "parameter_problems"]

FAILING = frozenset({"missing", "forbidden", "invalid", "error", "failed"})


@dataclass
class Finding:
    """One line of the report. Holds no value."""

    pipeline: str
    params: str
    item: str
    status: str
    detail: str = ""
    where: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def failed(self) -> bool:
        return self.status in FAILING


class _Scrubber:
    """Messages from drivers and stores as the log masker would show them (every value seen,
    its encodings and the secrets inside it, token shapes), with every URL's userinfo masked
    too. A masker of its own: values seen by a check are not registered process-wide."""

    def __init__(self) -> None:
        self._redactor = Redactor()

    def add(self, *values: str | None) -> None:
        for value in values:
            self._redactor.register(value)

    def __call__(self, text: str) -> str:
        return scrub_urls(self._redactor.redact(text))


def check_pipelines(lk: Pipekey, pipelines: Iterable[str] | None = None,
                    params: dict[str, str] | None = None, env: str | None = None,
                    connect: bool = False, timeout: float = 5.0,
                    progress: Callable[[Finding, int], None] | None = None) -> list[Finding]:
    """Check pipelines; returns one Finding per secret, connection and connect probe.

    ``progress(finding, total)`` is called as each connect probe finishes.
    """
    manifest_pipelines = lk.manifest.pipelines if lk.manifest else {}
    names = list(pipelines) if pipelines else sorted(manifest_pipelines)
    scrub = _Scrubber()
    findings: list[Finding] = []
    probes: list[tuple[Finding, Connection]] = []
    minted: list[Callable[[], None]] = []  # revokes the logins minted to probe
    try:  # from the first mint on: an interrupt or error later must not leave a login
        for name in names:
            config = lk.pipeline_config(name)
            for number, instance in _instances(config, params):
                label = ",".join(f"{k}={v}" for k, v in sorted(instance.items())) or "-"
                problem = parameter_finding(name, config, instance, number)
                if problem is not None:
                    findings.append(problem)
                    continue
                try:
                    run = lk.pipeline(name, env=env, **instance)
                except UsageError as exc:
                    findings.append(Finding(name, label, "(pipeline)", "invalid", str(exc)))
                    continue
                for finding, conn in _check_run(run, label, scrub, findings):
                    probes.append((finding, conn))
                if connect:
                    probes.extend(_mint_to_probe(run, label, scrub, findings, minted))
        if connect:
            findings.extend(_probe_all(probes, timeout, scrub, progress))
    finally:
        for revoke in minted:
            try:
                revoke()
            except PipekeyError as exc:
                findings.append(Finding("(check)", "-", "(revoke)", "error", str(exc)))
    for finding in findings:
        finding.detail = scrub(finding.detail)
    return findings


def _instances(config: PipelineConfig,
               params: dict[str, str] | None) -> list[tuple[int | None, dict[str, str]]]:
    """(the instance's number in the manifest, or None for --param or none, its values)."""
    if params is not None:
        return [(None, params)]
    return [(n, dict(i)) for n, i in enumerate(config.instances, start=1)] or [(None, {})]


def parameter_finding(name: str, config: PipelineConfig, instance: dict[str, str],
                      number: int | None = None, instances_hint: bool = True) -> Finding | None:
    """What keeps one instance from being checked (:func:`pipekey.parameters.problem`), as a
    finding; None when the instance can be checked."""
    found = parameter_problem(config, instance, number, instances_hint)
    if found is None:
        return None
    label = ",".join(f"{k}={v}" for k, v in sorted(instance.items())) or "-"
    return Finding(name, label, "(pipeline)", *found)


def parameter_problems(lk: Pipekey) -> list[Finding]:
    """What ``check`` refuses about parameters before it reads anything, for every pipeline
    of the manifest and each of its instances (``doctor`` shows these)."""
    pipelines = lk.manifest.pipelines if lk.manifest else {}
    problems = (parameter_finding(name, config, instance, number)
                for name, config in sorted(pipelines.items())
                for number, instance in _instances(config, None))
    return [p for p in problems if p is not None and p.failed]


def _check_run(run: Run, label: str, scrub: _Scrubber,
               findings: list[Finding]) -> Iterator[tuple[Finding, Connection]]:
    """Resolve one run's needs; append findings; yield (finding, connection) to probe."""
    try:
        resolved = run.preflight()
    except AccessDenied as exc:
        findings.append(Finding(run.pipeline, label, "(all)", "forbidden", str(exc)))
        return
    except PipekeyError as exc:
        findings.append(Finding(run.pipeline, label, "(all)", "error", str(exc)))
        return
    required = set(run.required)
    for item, resolution in resolved.items():
        secret = resolution.secret
        if secret is not None:
            scrub.add(secret.value)
        if item.startswith(CREDENTIAL_INPUT):  # an admin connection: not the run's to read
            item = "credential:" + ",".join(sorted(
                d for d in set(run.dynamic.values())
                if item[len(CREDENTIAL_INPUT):] in run.minter_reads(d)))
        if resolution.errors:
            findings.append(Finding(run.pipeline, label, item, "error", str(resolution.errors[0])))
        elif secret is None:
            levels = " > ".join(dict.fromkeys(a.level or a.path for a in resolution.attempts))
            status = "missing" if item in required else "ok"
            detail = f"not found at {levels}" if status == "missing" else "optional, not set"
            findings.append(Finding(run.pipeline, label, item, status, detail))
        elif item.startswith("connection:"):
            try:
                conn = Connection.from_value(secret.value, conn_id=item.split(":", 1)[1])
            except InvalidConnection as exc:
                findings.append(Finding(run.pipeline, label, item, "invalid", str(exc),
                                        f"{secret.backend} {secret.path}"))
                continue
            scrub.add(*conn.secret_values(), *host_userinfo(conn.host))
            finding = Finding(run.pipeline, label, item, "ok", f"type {conn.conn_type}",
                              f"{secret.backend} {secret.path}")
            findings.append(finding)
            yield finding, conn
        elif item.startswith("credential:"):
            try:
                conn = Connection.from_value(secret.value, conn_id=item)
            except InvalidConnection as exc:
                findings.append(Finding(run.pipeline, label, item, "invalid", str(exc),
                                        f"{secret.backend} {secret.path}"))
                continue
            scrub.add(*conn.secret_values(), *host_userinfo(conn.host))
            findings.append(Finding(run.pipeline, label, item, "ok",
                                    f"admin connection {secret.key!r} found",
                                    f"{secret.backend} {secret.path}"))
        else:
            findings.append(Finding(run.pipeline, label, item, "ok",
                                    f"version {secret.version or '-'}",
                                    f"{secret.backend} {secret.path}"))


def _mint_to_probe(run: Run, label: str, scrub: _Scrubber, findings: list[Finding],
                   minted: list[Callable[[], None]]) -> Iterator[tuple[Finding, Connection]]:
    """``--connect`` with a connection minted per run: mint a login as a run would, yield it
    to be probed, and leave its revoke in ``minted``."""
    for conn_name in run.dynamic:
        item = f"connection:{conn_name}"
        try:
            lease, revoke = run.mint_for_check(conn_name)
        except PipekeyError as exc:
            findings.append(Finding(run.pipeline, label, item, "failed", str(exc)))
            continue
        minted.append(revoke)
        scrub.add(*lease.connection.secret_values())
        finding = Finding(run.pipeline, label, item, "ok", f"minted login {lease.login}",
                          f"credentials.{lease.definition}")
        findings.append(finding)
        yield finding, lease.connection


def _probe_all(probes: list[tuple[Finding, Connection]], timeout: float, scrub: _Scrubber,
               progress: Callable[[Finding, int], None] | None) -> list[Finding]:
    from .probes import probe

    results: list[Finding] = []
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="pipekey-check") as pool:
        futures = [(f, pool.submit(probe, conn, timeout)) for f, conn in probes]
        for finding, future in futures:
            try:
                status, detail = future.result(timeout=timeout + 10)
            except FutureTimeout:
                status, detail = "failed", f"no answer within {timeout + 10:.0f} s"
            except Exception as exc:  # a driver's own error: report it, scrubbed
                status, detail = "failed", f"{type(exc).__name__}: {exc}"
            result = Finding(finding.pipeline, finding.params, f"{finding.item} (connect)",
                             status, scrub(detail.splitlines()[0] if detail else ""),
                             finding.where)
            results.append(result)
            if progress:
                progress(result, len(futures))
    return results
