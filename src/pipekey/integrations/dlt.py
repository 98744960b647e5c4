"""dlt integration: dlt's config lookups answered from the active pipekey run.

    import pipekey
    from pipekey.integrations import dlt as pipekey_dlt

    pipekey_dlt.install()                      # once per process
    lk = pipekey.load()
    with lk.pipeline("ads", account="acct_42"):
        dlt.pipeline("ads_acct_42", destination="duckdb").run(ads_source())

While a run is active in a thread or asyncio task, every dlt lookup made there is first
offered to pipekey:

* a source field (``sources.<section>.<name>.<field>``) whose name the run holds, e.g.
  ``api_token`` when the pipeline ``requires = ["api_token"]``, gets the run's value;
* ``destination.<name>.credentials`` (and its fields) gets the pipeline's ``dlt_destination``
  connection, converted with :meth:`Connection.to_dlt_credentials`, when the connection's type
  suits that destination; an ``aws`` connection without keys uses the run's assumed role,
  and its extra ``bucket_url`` answers ``destination.filesystem.bucket_url``;
* anything listed in the pipeline's ``dlt`` table (``"sources.github.access_token" =
  "secret:github_token"``, ``"destination.postgres.credentials" = "connection:warehouse"``,
  ``"sources.x.y" = "key:shared/y"``) gets what it names.

Pipeline-name-prefixed lookups are answered the same way: the run's scope decides, never the
dlt pipeline's name. What the run does not define falls through to dlt's own providers
(environment, secrets.toml...). With no active run the provider answers nothing.

``install()`` puts the provider first in dlt's lookup order. dlt's public
``dlt.config.register_provider`` appends providers *after* the environment and toml
providers, which would let a stray ``SOURCES__...`` variable or a shared secrets.toml beat the
run; so ``install`` inserts it at the head of the providers list that
``dlt.config.config_providers`` documents as the lookup order. ``install(first=False)``
uses ``register_provider`` instead.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple, Type

from .. import redact
from ..errors import MissingDependency, UsageError
from ..policy import fill_template
from ..run import Run, current

if TYPE_CHECKING:
    from dlt.common.configuration.specs.config_providers_context import (
        ConfigProvidersContainer,
    )

    from ..connection import Connection

try:
    from dlt.common.configuration.providers.provider import ConfigProvider
    from dlt.common.configuration.specs.base_configuration import is_secret_hint
except ImportError:  # pragma: no cover - exercised without the extra
    raise MissingDependency("pipekey.integrations.dlt", "dlt") from None

__all__ = ["PipekeyProvider", "PROVIDER_NAME", "dlt_destination", "dlt_mapping", "install",
           "installed", "uninstall"]

PROVIDER_NAME = "pipekey"

#: which connection types suit which dlt destinations
DESTINATION_TYPES = {
    "postgres": {"postgres", "redshift"}, "redshift": {"redshift", "postgres"},
    "duckdb": {"duckdb"}, "snowflake": {"snowflake"},
    "filesystem": {"aws", "s3"}, "athena": {"aws", "s3"},
    "bigquery": {"google_cloud_platform", "gcp", "bigquery"},
}


class PipekeyProvider(ConfigProvider):
    """A dlt ConfigProvider answering from :func:`pipekey.current`."""

    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def supports_secrets(self) -> bool:
        return True

    @property
    def supports_sections(self) -> bool:
        return True

    @property
    def locations(self) -> Sequence[str]:
        return ["the active pipekey run"]

    def get_value(self, key: str, hint: Type[Any], pipeline_name: Optional[str],
                  *sections: str) -> Tuple[Optional[Any], str]:
        path = ".".join((*sections, key))
        run = current()
        if run is None:
            return None, path
        value = answer(run, sections, key)
        if (value is not None and not is_secret_hint(hint) and "credentials" not in sections
                and _carries_secret(value)):
            # dlt keeps resolved config (non-secret) values in its trace, pickled on disk; in a
            # credentials spec dlt's own typing says which fields are secret (a host, a user
            # name or an AWS access key id are not)
            raise UsageError(
                f"dlt field {path!r} is declared as config, and dlt writes config values to "
                f"its trace on disk; pipekey run {run.name!r} answers it only as a secret: "
                "declare it dlt.secrets.value (or type it TSecretStrValue)")
        return value, path

    def get_value_location(self, key: str, pipeline_name: Optional[str], *sections: str) -> str:
        run = current()
        return f"pipekey run {run.name!r} of pipeline {run.pipeline!r}" if run else ""


def _carries_secret(value: Any) -> bool:
    """Whether an answer holds a value the masker guards (a run's secret, a password)."""
    texts = value.values() if isinstance(value, dict) else (value,)
    masker = redact.redactor()
    return any(isinstance(t, str) and t and masker.redact(t) != t for t in texts)


TOP_SECTIONS = ("sources", "destination")

_mappings: weakref.WeakKeyDictionary[Run, dict[str, str]] = weakref.WeakKeyDictionary()


def dlt_mapping(run: Run) -> dict[str, str]:
    """The dlt lookups ``run``'s pipeline maps explicitly (its ``dlt`` table): dotted path ->
    ``secret:NAME``, ``key:KEY`` (its template filled with the run's parameters) or
    ``connection:NAME``. Filled once per run.

    Raises:
        UsageError: a ``key:`` template needs a parameter the run lacks, or is no valid key.
    """
    mapping = _mappings.get(run)
    if mapping is None:
        values = {**run.params, "env": run.environment}
        what = f"pipeline {run.pipeline!r} dlt mapping"
        mapping = {path: "key:" + fill_template(target[4:], values, what)
                   if target.startswith("key:") else target
                   for path, target in run.config.dlt.items()}
        _mappings[run] = mapping
    return mapping


def dlt_destination(run: Run) -> str | None:
    """The connection ``run``'s pipeline names for dlt's destination credentials, if any."""
    return run.config.dlt_destination


def answer(run: Run, sections: Tuple[str, ...], key: str) -> Any:
    """What the run says for one dlt lookup, or None to let dlt look elsewhere."""
    if len(sections) > 1 and sections[0] not in TOP_SECTIONS and sections[1] in TOP_SECTIONS:
        sections = sections[1:]  # "<pipeline_name>.sources...": the run decides, not the name
    mapping = dlt_mapping(run)
    path = ".".join((*sections, key))
    if path in mapping:
        return _target(run, mapping[path], path)
    parent = ".".join(sections)
    if parent in mapping and parent.endswith(".credentials"):  # a field of mapped credentials
        value = _target(run, mapping[parent], parent)
        return value.get(key) if isinstance(value, dict) else None
    if sections and sections[0] == "sources":
        return run.held(key)
    if len(sections) >= 2 and sections[0] == "destination":
        return _destination(run, sections, key)
    return None


def _destination(run: Run, sections: Tuple[str, ...], key: str) -> Any:
    name = dlt_destination(run)
    if not name:
        return None
    conn = run.connection(name)
    if conn.conn_type not in DESTINATION_TYPES.get(sections[1], {sections[1]}):
        return None
    if len(sections) == 2 and key == "bucket_url":
        return conn.extra.get("bucket_url")
    credentials = _credentials(run, conn)
    if len(sections) == 2 and key == "credentials":
        return credentials
    if len(sections) == 3 and sections[2] == "credentials":
        return credentials.get(key)
    return None


def _credentials(run: Run, conn: Connection) -> dict[str, Any]:
    fields = conn.to_dlt_credentials()
    if conn.conn_type in ("aws", "s3") and not conn.login and run.has_aws_role:
        frozen = run.aws_session().get_credentials().get_frozen_credentials()
        fields.update(aws_access_key_id=frozen.access_key, aws_secret_access_key=frozen.secret_key,
                      aws_session_token=frozen.token)
    return fields


def _target(run: Run, target: str, path: str) -> Any:
    kind, _, name = target.partition(":")
    if kind == "secret":
        return run.secret(name)
    if kind == "key":
        return run.get(name)
    if kind == "connection":
        return _credentials(run, run.connection(name))
    raise UsageError(f"pipeline {run.pipeline!r}: dlt mapping for {path!r} is {target!r}; "
                     "use secret:NAME, key:KEY or connection:NAME")


def _container() -> ConfigProvidersContainer:
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    return Container()[PluggableRunContext].providers


def install(first: bool = True) -> PipekeyProvider:
    """Add the provider to dlt (idempotent). ``first=True`` puts it ahead of dlt's own."""
    providers = _container()
    uninstall()
    provider = PipekeyProvider()
    if first:
        providers.providers.insert(0, provider)
    else:
        providers.add_provider(provider)
    return provider


def uninstall() -> None:
    """Remove the provider from dlt."""
    providers = _container()
    providers.providers[:] = [p for p in providers.providers if p.name != PROVIDER_NAME]


def installed() -> bool:
    """True if the provider is in dlt's lookup order (dlt rebuilds it on a context reload)."""
    return any(p.name == PROVIDER_NAME for p in _container().providers)
