"""The child environment of a run: variable names and what ``run.env()`` exports."""

from __future__ import annotations

import pytest

from pipekey import RunClosed
from pipekey.childenv import (
    connection_variable,
    env_name,
    run_environment,
    secret_variable,
)

from .test_run import DATA, make


def test_variable_names() -> None:
    """env_vars names win; else UPPER_SNAKE for secrets, AIRFLOW_CONN_<NAME> for connections."""
    assert env_name("access-token.v2") == "ACCESS_TOKEN_V2"
    assert secret_variable({"app_secret": "FB_APP_SECRET"}, "app_secret") == "FB_APP_SECRET"
    assert secret_variable({}, "access_token") == "ACCESS_TOKEN"
    assert connection_variable({}, "warehouse") == "AIRFLOW_CONN_WAREHOUSE"
    assert connection_variable({"warehouse": "WH_URI"}, "warehouse") == "WH_URI"


def test_run_env_is_run_environment() -> None:
    """run.env() is childenv.run_environment(run); a closed run exports nothing."""
    with make().pipeline("ads", account="acct_42") as run:
        assert run.env() == run_environment(run) == {
            "ACCESS_TOKEN": "fake-tok-42", "FB_APP_SECRET": "fake-app",
            "AIRFLOW_CONN_WAREHOUSE": DATA["connections/wh_dev"]}
    with pytest.raises(RunClosed):
        run.env()
