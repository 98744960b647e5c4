"""Airflow's team-scoped secret names: part of :mod:`pipekey.policy` (the one read policy),
kept in its own module for size."""

from __future__ import annotations

# -- the drop-in for Airflow's AWS backends ---------------------------------------------------
#: what separates the team from the id in Airflow's team-scoped names (``<team>--<id>``)
AIRFLOW_TEAM_SEP = "--"


def airflow_names(prefix: str, secret_id: str, team: str | None, *, multi_team: bool,
                  sep: str = "/", team_without_prefix: bool = True) -> tuple[str, ...]:
    """The names a caller of Airflow team ``team`` (None: no team) may read for
    ``secret_id`` under ``prefix``, in the order Airflow's SSM and Secrets Manager backends
    try them: ``<prefix><sep><team>--<id>``, then ``<prefix><sep><id>``; none (refused) for an
    id holding ``--`` in multi-team mode, which could spell another team's namespace.

    Only the caller's own team-scoped name is built, never parsed, so a team-scoped name is
    served to its team alone (never to another team, nor to no team). ``team_without_prefix``:
    whether an empty prefix still gets the team-scoped name (SSM's yes, Secrets Manager's no).
    """
    if multi_team and AIRFLOW_TEAM_SEP in secret_id:
        return ()

    def name(part: str) -> str:
        return f"{prefix}{sep}{part}" if prefix else part

    scoped = (name(f"{team}{AIRFLOW_TEAM_SEP}{secret_id}"),) \
        if team and (prefix or team_without_prefix) else ()
    return (*scoped, name(secret_id))
