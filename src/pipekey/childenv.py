"""A run's secrets as environment variables for a child process (``run.env()``, and so
``pipekey run``).

Each secret the run holds goes under its ``env_vars`` name in the manifest, else its name in
upper snake case; each connection as ``AIRFLOW_CONN_<NAME>`` (or its ``env_vars`` name)
holding its Airflow URI; with an ``aws_role``, the role's temporary ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``. What the child inherits besides is
decided by ``pipekey.cli.run.child_environment``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import Run

__all__ = ["CONNECTION_PREFIX", "NOT_IN_VARIABLE", "connection_env_name",
           "connection_variable", "env_name", "run_environment", "secret_variable"]


#: what an environment variable's name cannot hold: each such character becomes ``_``
NOT_IN_VARIABLE = re.compile(r"[^A-Za-z0-9]")
#: the prefix of a variable holding a connection (Airflow's)
CONNECTION_PREFIX = "AIRFLOW_CONN_"


def env_name(name: str) -> str:
    """``access_token`` -> ``ACCESS_TOKEN``: the variable name for a secret or a connection
    (``AIRFLOW_CONN_`` + this), the one rule for both."""
    return NOT_IN_VARIABLE.sub("_", name).upper()


def connection_env_name(conn_id: str) -> str:
    """``my-db`` -> ``AIRFLOW_CONN_MY_DB``: the variable holding connection ``conn_id``, by
    the one rule pipekey both writes and reads it with."""
    return CONNECTION_PREFIX + env_name(conn_id)


def secret_variable(env_vars: Mapping[str, str], name: str) -> str:
    """The variable that holds secret ``name``: its ``env_vars`` entry, else UPPER_SNAKE."""
    return env_vars.get(name, env_name(name))


def connection_variable(env_vars: Mapping[str, str], conn: str) -> str:
    """The variable that holds connection ``conn``: its ``env_vars`` entry, else
    ``AIRFLOW_CONN_<NAME>``."""
    return env_vars.get(conn, connection_env_name(conn))


def run_environment(run: Run) -> dict[str, str]:
    """The variables a child process of ``run`` gets (see the module docstring).

    Raises:
        RunClosed, UsageError: the run is not open.
    """
    env_vars = run.config.env_vars
    env = {}
    for name in run.names:
        value = run.held(name)
        if value is not None:
            env[secret_variable(env_vars, name)] = value
    for conn in run.connection_names:  # minted per run (dynamic) included
        env[connection_variable(env_vars, conn)] = run.connection(conn).to_uri()
    if run.has_aws_role:
        creds = run.aws_session().get_credentials().get_frozen_credentials()
        env.update({"AWS_ACCESS_KEY_ID": creds.access_key,
                    "AWS_SECRET_ACCESS_KEY": creds.secret_key,
                    "AWS_SESSION_TOKEN": creds.token})
    return env
