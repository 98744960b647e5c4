"""Broker mode on the API server: each Airflow team's lookups answered within its policy.

A team's policy is the union of the policies of the pipelines that serve it (``teams = [...]``
in ``[pipelines.NAME]``), over every value of their scope parameters: a templated scope
``accounts/{account}`` allows ``accounts/<any segment>/...``. Concretely a team may read a key

* under a pipeline's scope (a ``{parameter}`` matches any one segment),
* ``<level>/<name>`` for a name the pipeline declares, at a parent level of its scope,
* that a pipeline maps a connection to, under a pipeline's grants, or under ``shared/``.

:class:`TeamBroker` answers lookups with that policy: a key pipekey holds outside it is
refused (:class:`~pipekey.errors.AccessDenied`, naming the team and the key, never a value);
a key it does not hold is None, so Airflow's other backends may answer. A team the manifest
does not know is refused. A lookup with no team reads ``shared/`` only (``no_team =
"shared_only"``) or nothing (``"deny"``). A run request (:mod:`pipekey.broker`) opens the run
for a pipeline that serves the team and answers with its values, the logins it minted
included (handed over: the worker's close request revokes them,
:mod:`pipekey.broker_leases`); a refused one is answered with a refusal the worker raises
on, never an exception (Airflow's Execution API would make that an HTTP 500 the Task SDK
retries for seconds).

Reads for a team whose ``[teams.NAME]`` table names an ``aws_role`` go through a chain whose
AWS backends act as that role (RoleSessionName ``pipekey-team-NAME`` unless the table says),
assumed once per team and refreshed by botocore shortly before it expires.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import msgspec

from . import redact
from .backends.aws_common import AwsConfig
from .backends.base import Secret
from .broker import encode_payload, parse_request, refusal_payload
from .broker_leases import OpenLogins, minted_entries, serve_close
from .credentials.base import DYNAMIC
from .errors import AccessDenied, InvalidKey, PipekeyError, SecretNotFound, UsageError
from .policy import (
    NO_PIPELINE,
    Ownership,
    TeamPolicy,
    check_parameters,
    fill_template,
    served_environments,
    template_fields,
)
from .run import Run

if TYPE_CHECKING:
    from .backends.base import BackendConfig
    from .client import Pipekey
    from .manifest import AwsRole

__all__ = ["NO_TEAM", "TeamBroker", "TeamPolicy"]

NO_TEAM = ("shared_only", "deny")
log = logging.getLogger("pipekey")


class TeamBroker:
    """Answers the lookups of Airflow's Execution API per team (``mode="broker"``).

    Args:
        lk: the API server's Pipekey (the manifest, and the chain of teams without a role).
        no_team: ``"shared_only"`` or ``"deny"``: what a lookup without a team may read.
        mask: registers a value with the integration's masker before it is returned.
    """

    def __init__(self, lk: Pipekey, no_team: str = "shared_only",
                 mask: Callable[[str], None] = lambda value: None) -> None:
        if no_team not in NO_TEAM:
            raise UsageError("no_team is 'shared_only' or 'deny'")
        self.lk = lk
        self.no_team = no_team
        self.mask = mask
        manifest = lk.manifest
        pipelines = manifest.pipelines if manifest else {}
        #: every environment a run request may name; every team's policy holds over all of them
        self.served = served_environments(manifest.environments if manifest else None, lk.env,
                                          pipelines.values())
        #: which team owns which key prefixes (ManifestError if two teams' overlap)
        self.ownership = Ownership(pipelines, self.served,
                                   manifest.path if manifest and manifest.path else "pipekey.toml")
        self._teams: dict[str, Pipekey] = {}
        self._policies: dict[str, TeamPolicy] = {}
        self._lock = threading.Lock()
        #: minted logins handed over and not closed yet (bounded per team and pipeline)
        self.open_logins = OpenLogins()
        redact.install()  # what the broker resolves is masked in this process's logs

    # -- per team -------------------------------------------------------------------------
    def policy(self, team: str) -> TeamPolicy:
        """The policy of ``team``.

        Raises:
            AccessDenied: the manifest knows no such team.
        """
        policy = self._policies.get(team)
        if policy is not None:
            return policy
        manifest = self.lk.manifest
        served = {n: p for n, p in (manifest.pipelines if manifest else {}).items()
                  if team in p.teams}
        if not served:
            raise AccessDenied(f"Airflow team {team!r} is served by no pipekey pipeline "
                               f"(add it to a pipeline's teams = [...] in the manifest)")
        with self._lock:  # the manifest does not change: one policy per team
            return self._policies.setdefault(team, TeamPolicy(team, served, self.served))

    def pipekey(self, team: str) -> Pipekey:
        """The Pipekey a team's reads go through: with its ``[teams.NAME] aws_role``, one
        whose AWS backends assume that role (built once per team), else the server's own."""
        manifest = self.lk.manifest
        table = manifest.teams.get(team) if manifest else None
        if manifest is None or table is None or table.aws_role is None:
            return self.lk
        with self._lock:
            if team not in self._teams:
                from .client import from_manifest

                backends = {name: _with_role(cfg, table.aws_role, team)
                            for name, cfg in manifest.backends.items()}
                self._teams[team] = from_manifest(replace(manifest, backends=backends))
            return self._teams[team]

    # -- lookups --------------------------------------------------------------------------
    def read(self, key: str, team: str | None, what: str) -> str | None:
        """The value of ``key`` for ``team`` (``what``: "variable 'x'", for messages)."""
        if team is None:
            if self.no_team == "shared_only" and NO_PIPELINE.allows(key):
                return self._read(self.lk, key, None)
            self._deny_if_held(self.lk, key, f"{what} ({key!r}) is not served to a lookup "
                                              "without an Airflow team (broker mode serves "
                                              + ("shared/ only)" if self.no_team == "shared_only"
                                                 else "nothing then)"), self._teams_key(key))
            return None
        policy = self.policy(team)
        lk = self.pipekey(team)
        if not policy.allows(key):
            self._deny_if_held(lk, key, f"Airflow team {team!r} may not read {what} ({key!r}): "
                                        "outside the policy of the team's pipekey pipelines "
                                        f"{sorted(policy.pipelines)}", self._teams_key(key))
            return None
        other = self.claimant(team, key)
        if other is not None:
            self._deny_if_held(lk, key, f"Airflow team {team!r} may not read {what} ({key!r}): "
                                        f"it is under a key prefix team {other!r} owns",
                               True)
            return None
        return self._read(lk, key, policy)

    def connection_key(self, conn_id: str, team: str | None, default: str | None) -> str | None:
        """The key a team's ``conn_id`` reads: its pipeline's mapping if parameter-free, else
        ``default`` (``<connections_prefix>/<conn_id>``)."""
        if team is None:
            return default
        mapping = self.policy(team).connection(conn_id)
        if mapping is None:
            return default
        pipeline, template = mapping
        if template.startswith(DYNAMIC):  # never a stored key: no other backend answers
            raise AccessDenied(f"Airflow team {team!r}: connection {conn_id!r} of pipeline "
                               f"{pipeline!r} is a login minted per run "
                               f"(credentials.{template[len(DYNAMIC):]}); open a run in "
                               "the task (task_run / @pipekey_task)")
        if set(template_fields(template)) - {"env"}:
            raise AccessDenied(f"Airflow team {team!r}: connection {conn_id!r} of pipeline "
                               f"{pipeline!r} depends on the scope's parameters; open a run "
                               "in the task (task_run / @pipekey_task)")
        return fill_template(template, {"env": self.lk.env}, f"pipeline {pipeline!r} connection "
                                                            f"{conn_id!r}")

    def answer(self, request_key: str, team: str | None) -> str:
        """What the backend answers a run request with (:meth:`run`), a refusal
        (:func:`pipekey.broker.refusal_payload`, which the worker raises on) instead of an
        exception. Never raises: the answer is pipekey's, so Airflow asks no other backend,
        and the task learns why at once (an exception here is an HTTP 500 to the Task SDK,
        which retries it for seconds and then reports "not found")."""
        try:
            return self.run(request_key, team)
        except PipekeyError as exc:
            reason = redact.redactor().redact(str(exc))
            if team is not None and repr(team) not in reason:
                reason = f"Airflow team {team!r}: {reason}"
            log.warning("pipekey: refused a run request: %s", reason)
            return refusal_payload(reason)
        except Exception as exc:  # noqa: BLE001 - the task gets a reason, the log the rest
            log.error("pipekey: a run request of Airflow team %r failed: %s", team,
                      type(exc).__name__)
            return refusal_payload(f"pipekey could not answer a run request of Airflow team "
                                   f"{team!r} ({type(exc).__name__}; see the API server's "
                                   "log)")

    def run(self, request_key: str, team: str | None) -> str:
        """Open the requested run for ``team`` and return its payload, with the logins it
        minted (handed over: the worker's close request revokes them); for a close request,
        revoke the login it names and return the answer.

        Raises:
            AccessDenied: no team, or the pipeline does not serve the team.
            UsageError, MissingSecrets, BackendError, CredentialError: as opening the run
                (or revoking) would.
        """
        request = parse_request(request_key)
        if team is None:
            raise AccessDenied(f"a run of pipekey pipeline {request.pipeline!r} is served only "
                               "to a task of an Airflow team (broker mode)")
        policy = self.policy(team)
        if request.pipeline not in policy.pipelines:
            raise AccessDenied(f"Airflow team {team!r} may not open pipekey pipeline "
                               f"{request.pipeline!r} (the team's pipelines: "
                               f"{sorted(policy.pipelines)})")
        config = policy.pipelines[request.pipeline]
        if request.close is not None:  # the worker's run closed: revoke its minted login
            if request.close["env"] not in self.served:
                raise AccessDenied(f"Airflow team {team!r}: no environment "
                                   f"{request.close['env']!r} is served here")
            return serve_close(self.pipekey(team), team, request.pipeline,
                               config.minted_connections(), request.close,
                               lambda login: self.open_logins.closed(team, request.pipeline,
                                                                     login))
        # before the call: a parameter named env or run_name is no keyword
        check_parameters(request.pipeline, config.parameters(), request.params)
        if request.env is not None and request.env not in self.served:
            raise AccessDenied(f"Airflow team {team!r} may not open pipekey pipeline "
                               f"{request.pipeline!r} in environment {request.env!r} (served: "
                               f"{list(self.served)})")
        if config.minted_connections():
            self.open_logins.admit(team, request.pipeline)
        lk = self.pipekey(team)
        # the run name is the task's word; the team is Airflow's: the audit says which is which
        label = f"{team}/{request.run_name or uuid.uuid4().hex[:12]}"
        with lk.pipeline(request.pipeline, env=request.env, run_name=label,
                         **dict(request.params)) as run:
            keys = _dlt_keys(run)
            for secret in [*run.resolved().values(), *keys.values()]:
                other = self.claimant(team, secret.key)
                if other is not None:
                    raise AccessDenied(
                        f"Airflow team {team!r}: the run of pipekey pipeline "
                        f"{request.pipeline!r} with {dict(request.params)} reads "
                        f"{secret.key!r}, under a key prefix team {other!r} owns (a parameter "
                        "value may not reach another team's keys)")
            minted = minted_entries(run, team)
            text = encode_payload(run, keys, minted)
            self.open_logins.add(team, request.pipeline,
                                 {str(m["login"]): float(m["expires_at"]) for m in minted.values()})
            run.hand_over_leases()  # the worker's close request (or their ttl) ends them
            return text

    def claimant(self, team: str, key: str) -> str | None:
        """Another team that owns ``key`` (:class:`~pipekey.policy.Ownership`) when ``team``
        neither owns it nor grants it: ``team`` reaches it only through a parameter's value
        (``connections/lake_{account}`` with account ``"finance"``), so it is refused."""
        owners = self.ownership.owners(key)
        if not owners or team in owners or self.policy(team).granted(key):
            return None
        return sorted(owners)[0]

    # -- internals ------------------------------------------------------------------------
    def _read(self, lk: Pipekey, key: str, policy: TeamPolicy | None) -> str | None:
        try:
            secret = lk.chain.get(key)
        except SecretNotFound:
            return None
        if secret.document and not (policy.allows_subtree(key) if policy
                                    else NO_PIPELINE.allows_subtree(key)):
            who = f"Airflow team {policy.team!r}" if policy else "a lookup without a team"
            raise AccessDenied(f"{who} may not read {key!r}: it is a document standing for a "
                               "subtree outside the team's pipelines' policy")
        self.mask(secret.value)
        return secret.value

    def _teams_key(self, key: str) -> bool:
        """True if some team's policy covers ``key`` (``shared/`` aside)."""
        manifest = self.lk.manifest
        return not NO_PIPELINE.allows(key) and manifest is not None and any(
            self.policy(team).allows(key) for team in sorted(manifest.team_names()))

    def _deny_if_held(self, lk: Pipekey, key: str, why: str, always: bool = False) -> None:
        """Refuse ``key`` if a store holds it, or ``always``: a key in a team's namespace is
        refused unasked, so a refusal does not tell another team which keys exist there."""
        if always:
            raise AccessDenied(why)
        try:
            held = lk.chain.resolve([key])[key].status != "absent"  # failed: cannot tell
        except InvalidKey:
            held = False  # no store of pipekey's can hold it: Airflow's backends may answer
        except PipekeyError:
            held = True  # cannot tell: refuse rather than let another backend answer
        if held:
            raise AccessDenied(why)


def _dlt_keys(run: Run) -> dict[str, Secret]:
    """The ``key:`` targets of the run's dlt table that the store holds, read through the run
    (so its policy applies)."""
    values = {**run.params, "env": run.environment}
    out = {}
    for path, target in run.config.dlt.items():
        if not target.startswith("key:"):
            continue
        key = fill_template(target[len("key:"):], values, f"dlt field {path!r}")
        try:
            value = run.get(key)
        except PipekeyError:
            continue  # absent or refused: the worker's run says so when dlt asks for it
        out[key] = Secret(key=key, value=value, backend="broker", path=key)
    return out


def _with_role(cfg: BackendConfig, role: AwsRole, team: str) -> BackendConfig:
    """An AWS backend's config acting as the team's read role (others unchanged)."""
    if not isinstance(cfg, AwsConfig):
        return cfg
    return msgspec.structs.replace(
        cfg, role_arn=role.arn, role_external_id=role.external_id,
        role_session_name=role.session_name or f"pipekey-team-{team}",
        role_duration=role.duration, region=role.region or cfg.region)
