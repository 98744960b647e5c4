"""Broker mode without its limits (issue 29), in one process: a refused run request answered
at once with pipekey's own message, and a task's hooks answered from its open brokered run
(``[workers] secrets_backend = pipekey.integrations.airflow_worker.PipekeyRunBackend``).
The deployment test runs both in a real multi-team Airflow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipekey.broker import PREFIX, brokered_run, decode_payload, request_key
from pipekey.errors import AccessDenied, MissingSecrets

from .test_broker import STORE, _fetch, _world


def test_a_refused_run_request_is_an_answer_the_worker_raises_on(tmp_path: Path) -> None:
    """The broker answers a run request it refuses with a refusal, not an exception (which
    Airflow's Execution API turns into HTTP 500, retried for seconds before the task sees
    "not found"): the worker raises pipekey's AccessDenied at once, naming the team and the
    pipeline, after one request."""
    team_broker, _ = _world(tmp_path)
    answer = team_broker.answer(request_key("ads", None, {"account": "acct_42"}), "finance")
    with pytest.raises(AccessDenied, match="Airflow team 'finance' may not open pipekey "
                                           "pipeline 'ads'"):
        decode_payload(answer)
    asked: list[str] = []

    def fetch(key: str) -> str:
        asked.append(key)
        return team_broker.answer(key, "finance")

    start = time.perf_counter()
    with pytest.raises(AccessDenied, match="the pipekey broker refused the run of pipeline 'ads': "
                                           "Airflow team 'finance' may not open pipekey "
                                           "pipeline 'ads'"):
        brokered_run(team_broker.lk.manifest, "ads", fetch, params={"account": "acct_42"})
    assert len(asked) == 1 and time.perf_counter() - start < 1


@pytest.mark.parametrize(("key", "team", "said"), [
    pytest.param(PREFIX + "ads.not-base64-json", "marketing", "is not a pipekey run request",
                 id="malformed"),
    pytest.param(request_key("ads", None, {"account": "acct_42"}), None,
                 "served only to a task of an Airflow team", id="no-team"),
    pytest.param(request_key("ads", None, {"account": "acct_99"}), "marketing",
                 "marketing/ads/acct_99/access_token", id="missing-secret"),
    pytest.param(request_key("ads", "staging", {"account": "acct_42"}), "marketing",
                 "in environment 'staging'", id="environment"),
])
def test_every_refusal_is_an_answer_naming_what_without_a_value(tmp_path: Path, key: str,
                                                              team: str | None,
                                                              said: str) -> None:
    """Malformed, no team, a missing secret, an environment not served: each is a refusal
    the worker raises on, one line, naming keys and never a value (so no other backend is
    asked either: the answer is pipekey's)."""
    team_broker, _ = _world(tmp_path)
    answer = team_broker.answer(key, team)
    assert all(value not in answer for value in STORE.values())
    with pytest.raises(AccessDenied) as info:
        decode_payload(answer)
    assert said in str(info.value) and "\n" not in str(info.value)


def test_a_store_failure_is_a_refusal_naming_the_type_only(tmp_path: Path, caplog) -> None:
    """An unexpected error while serving a run request is a refusal naming its type (the
    API server's log has the rest), never a traceback or a value."""
    team_broker, memory = _world(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("fake-token-acct42 inside an unexpected error")

    memory._get_many = broken  # type: ignore[method-assign]
    answer = team_broker.answer(request_key("ads", None, {"account": "acct_42"}), "marketing")
    assert "fake-" not in answer
    with pytest.raises(AccessDenied, match="RuntimeError"):
        decode_payload(answer)


def test_hooks_in_an_open_brokered_run_answer_from_the_run(tmp_path: Path,
                                                          monkeypatch) -> None:
    """PipekeyRunBackend, first in the worker's chain: inside an open brokered run a conn_id
    the pipeline maps (parameterised: lake_{account}) is the run's connection, a Variable
    named like a secret the run holds is that secret, through Airflow's own lookup and a
    real provider hook; everything else, and everything outside a run, goes on to the next
    backend (the API server); run requests never stop here."""
    pytest.importorskip("airflow")
    import airflow.sdk.execution_time.supervisor as supervisor
    from airflow.sdk import Variable
    from airflow.sdk.bases.hook import BaseHook

    from pipekey.integrations.airflow_worker import PipekeyRunBackend

    team_broker, _ = _world(tmp_path)
    asked: list[str] = []

    class ApiServer:  # the next backend: records what reaches it
        def get_connection(self, conn_id: str, team_name: str | None = None):
            asked.append(conn_id)
            return None

        def get_variable(self, key: str, team_name: str | None = None):
            asked.append(key)
            return None

    worker = PipekeyRunBackend()
    monkeypatch.setattr(supervisor, "ensure_secrets_backend_loaded",
                        lambda: [worker, ApiServer()])
    with brokered_run(team_broker.lk.manifest, "ads", _fetch(team_broker, "marketing"),
                      params={"account": "acct_42"}) as run:
        assert BaseHook.get_connection("lake").password == "fake-lake42-pw"
        assert BaseHook.get_connection("warehouse").host == "wh"
        assert Variable.get("access_token") == "fake-token-acct42"
        assert worker.get_variable(request_key("ads", None, {"account": "acct_42"})) is None
        with pytest.raises(Exception, match="isn't defined"):
            BaseHook.get_connection("unmapped")
        try:
            from airflow.providers.postgres.hooks.postgres import PostgresHook
        except ImportError:
            pass
        else:
            hook = PostgresHook(postgres_conn_id="lake")
            assert hook.get_connection("lake").login == "u"
        assert run.connection("lake").host == "lake"
    assert asked == ["unmapped"]
    assert worker.get_conn_value("lake") is None and worker.get_variable("access_token") is None
    with pytest.raises(Exception, match="isn't defined"):
        BaseHook.get_connection("lake")
    assert asked[-1] == "lake"


def test_the_run_backend_takes_no_arguments() -> None:
    pytest.importorskip("airflow")
    from pipekey.errors import UsageError
    from pipekey.integrations.airflow_worker import PipekeyRunBackend

    with pytest.raises(UsageError, match="takes no secrets_backend_kwargs"):
        PipekeyRunBackend(manifest="x")


def test_missing_secrets_still_list_every_place_looked(tmp_path: Path) -> None:
    """A run request for an account without its secret is refused with MissingSecrets' own
    text (every key looked at), raised in the worker as the refusal."""
    team_broker, _ = _world(tmp_path)
    with pytest.raises(AccessDenied) as info:
        brokered_run(team_broker.lk.manifest, "ads",
                     lambda key: team_broker.answer(key, "marketing"),
                     params={"account": "acct_99"})
    assert "acct_99" in str(info.value)
    assert not isinstance(info.value, MissingSecrets)


def test_a_run_that_cannot_answer_refuses_rather_than_falls_through(tmp_path: Path) -> None:
    """A hook on a thread that attached the run, called after the run closed: the run backend
    raises Airflow's refusal (the Task SDK then asks no other backend), not RunClosed, after
    which Airflow would try its environment variables and the API server."""
    pytest.importorskip("airflow")
    import threading

    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    from pipekey.integrations.airflow_worker import PipekeyRunBackend

    team_broker, _ = _world(tmp_path)
    worker = PipekeyRunBackend()
    closed, got = threading.Event(), []

    def late_hook(run) -> None:
        with run.attach():
            closed.wait(30)
            try:
                got.append(("answered", worker.get_conn_value("lake")))
            except Exception as exc:  # noqa: BLE001 - the type is the assertion
                got.append((type(exc).__name__, str(exc)))

    with brokered_run(team_broker.lk.manifest, "ads", _fetch(team_broker, "marketing"),
                      params={"account": "acct_42"}) as run:
        thread = threading.Thread(target=late_hook, args=(run,))
        thread.start()
    closed.set()
    thread.join(30)
    assert [kind for kind, _ in got] == [AirflowSecretsBackendAccessDenied.__name__], got
    assert "has ended" in got[0][1] and "fake" not in repr(got)
