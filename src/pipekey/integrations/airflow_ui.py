"""The inventory inside Airflow 3's UI: an Airflow plugin (``pipekey[ui,airflow]``).

Registered by the entry point ``airflow.plugins`` (``pipekey_inventory``): the API server
mounts the inventory's FastAPI app (:mod:`pipekey.ui.app`) at ``/pipekey`` and the UI shows a
"Secrets inventory" menu entry opening it. Every page needs Airflow's own authentication
(the UI's session cookie or a bearer token, checked by Airflow's ``get_user``; 401 without).

In a multi-team deployment (``[core] multi_team``), a user sees the pipelines of the teams
Airflow's auth manager says they belong to (``filter_authorized_teams`` over the teams the
manifest's pipelines serve), the keys those pipelines use and ``shared/``; a user of no
team sees ``shared/`` alone (broker mode's boundary). Without multi-team, every
authenticated user sees everything.

Which manifest: ``$PIPEKEY_CONFIG`` (broker mode's API server has it), else the ``manifest``
of ``[secrets] backend_kwargs`` or ``[workers] secrets_backend_kwargs``.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends

from ..ui.app import InventorySource, create_app

__all__ = ["PipekeyInventoryPlugin", "URL_PREFIX"]

URL_PREFIX = "/pipekey"
_held: list[InventorySource] = []


def _manifest() -> str | None:
    if os.environ.get("PIPEKEY_CONFIG"):
        return os.environ["PIPEKEY_CONFIG"]
    from airflow.configuration import conf

    for section, option in (("secrets", "backend_kwargs"),
                            ("workers", "secrets_backend_kwargs")):
        raw = conf.get(section, option, fallback=None)
        try:
            kwargs = json.loads(raw) if raw else {}
        except ValueError:
            continue
        if isinstance(kwargs, dict) and kwargs.get("manifest"):
            return str(kwargs["manifest"])
    return None


def _source() -> InventorySource:
    if not _held:
        import pipekey

        _held.append(InventorySource(pipekey.load(_manifest())))
    return _held[0]


def viewer_teams(user: Annotated[Any, Depends(get_user)]) -> set[str] | None:
    """The teams the signed-in user may see; None (all) outside multi-team deployments."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.configuration import conf

    if not conf.getboolean("core", "multi_team", fallback=False):
        return None
    manifest = _source().lk.manifest
    served = manifest.team_names() if manifest else set()
    allowed: set[str] = get_auth_manager().filter_authorized_teams(teams_names=served,
                                                                   user=user)
    return set(allowed)


class PipekeyInventoryPlugin(AirflowPlugin):
    """The inventory's pages in the API server, and a menu entry in the UI."""

    name = "pipekey_inventory"
    fastapi_apps = [{"app": create_app(_source, viewer_teams, frame_ancestors="'self'"),
                     "url_prefix": URL_PREFIX, "name": "pipekey inventory"}]
    external_views = [{"name": "Secrets inventory", "href": f"{URL_PREFIX}/",
                       "destination": "nav", "category": "browse",
                       "url_route": "pipekey-inventory"}]
