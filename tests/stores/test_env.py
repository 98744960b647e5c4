"""The env backend's naming rules."""

from __future__ import annotations

import pytest

from pipekey.backends.env import EnvBackend, key_to_name, name_to_key


def test_documented_mapping() -> None:
    """marketing/facebook/access_token <-> PIPEKEY__MARKETING__FACEBOOK__ACCESS_TOKEN."""
    name = "PIPEKEY__MARKETING__FACEBOOK__ACCESS_TOKEN"
    assert key_to_name("marketing/facebook/access_token", "PIPEKEY__") == name
    assert name_to_key(name, "PIPEKEY__") == "marketing/facebook/access_token"


@pytest.mark.parametrize("name", ["OTHER__X", "PIPEKEY__", "PIPEKEY__A____B", "PIPEKEY__A__"])
def test_foreign_or_malformed_names_are_ignored(name: str) -> None:
    """Variables outside the prefix or with empty segments are not keys."""
    assert name_to_key(name, "PIPEKEY__") is None


def test_read_at_call_time_with_custom_prefix_and_separator() -> None:
    """The backend reads the environment on every call, with its own prefix and separator."""
    environ: dict[str, str] = {}
    b = EnvBackend("e", prefix="APP_", separator="_X_", environ=environ)
    assert b.get("db/password") is None
    environ["APP_DB_X_PASSWORD"] = "fake-pw"
    assert b.get("db/password").value == "fake-pw"
    assert b.locate("db/password") == "$APP_DB_X_PASSWORD"
    assert b.list_keys("db") == ["db/password"]


@pytest.mark.parametrize("key", [
    pytest.param("my-app/api_key", id="dash"),
    pytest.param("my_app/api.key", id="dot"),
    pytest.param("marketing/facebook/ACCT_43/access_token", id="upper-case"),
    pytest.param("marketing/facebook/acct_43__access_token", id="separator-in-segment"),
    pytest.param("a_/b", id="trailing-underscore"),
    pytest.param("a/_b", id="leading-underscore"),
])
def test_keys_a_variable_cannot_tell_apart_have_no_variable(key: str) -> None:
    """Case, '-', '.', the separator and edge '_' fold into other keys' names: no variable."""
    assert key_to_name(key, "PIPEKEY__") is None
    backend = EnvBackend(environ={"PIPEKEY__" + key.upper().replace("/", "__"): "fake-x"})
    assert backend.get(key) is None and backend.store_name(key) is None
    assert "segment" in (backend.unmappable(key) or "")


def test_names_that_do_not_read_back_exactly_stand_for_no_key() -> None:
    """Listing is the exact inverse: lower-case or doubled-underscore names are not keys."""
    environ = {"PIPEKEY__ACCT_43__TOKEN": "fake-43", "PIPEKEY__acct_43__TOKEN": "fake-lower",
               "PIPEKEY__ACCT_43___TOKEN": "fake-triple"}
    backend = EnvBackend(environ=environ)
    assert backend.list_keys("") == ["acct_43/token"]
    assert name_to_key("PIPEKEY__acct_43__TOKEN", "PIPEKEY__") is None
    assert name_to_key("PIPEKEY__ACCT_43___TOKEN", "PIPEKEY__") is None


def test_acct_42_cannot_read_acct_43_through_the_separator() -> None:
    """The issue's case: a name holding '__' reads nothing, and says why in the walk."""
    environ = {"PIPEKEY__MARKETING__FACEBOOK__ACCT_43__ACCESS_TOKEN": "fake-token-acct43"}
    backend = EnvBackend(environ=environ)
    assert backend.get("marketing/facebook/acct_43/access_token").value == "fake-token-acct43"
    for key in ("marketing/facebook/acct_43__access_token",
                "marketing/facebook__acct_43__access_token",
                "marketing/facebook/ACCT_43/access_token",
                "marketing/facebook/acct-43/access_token",
                "MARKETING/facebook/acct_43/access_token"):
        assert backend.get_many([key]) == {}, key


def test_writes_of_unmappable_keys_are_refused_naming_key_and_reason() -> None:
    """A writable backend that cannot map a key refuses it with one line: key and reason."""
    from pipekey import InvalidKey
    from pipekey.testing import MemoryBackend

    class Picky(MemoryBackend):
        def unmappable(self, key: str) -> str | None:
            return "upper case" if key != key.lower() else None

    backend = Picky("picky")
    with pytest.raises(InvalidKey) as info:
        backend.put("Shared/Token", "fake-token-acct42")
    message = str(info.value)
    assert "'Shared/Token'" in message and "picky" in message and "upper case" in message
    assert "fake-token" not in message and "\n" not in message
    assert backend.list_keys("") == [] and backend.get("Shared/Token") is None


def test_a_run_reaches_only_its_own_account_through_env() -> None:
    """Scope parameters and names that fold onto acct_43's variable never read its value."""
    from pathlib import Path

    import pipekey
    from pipekey import AccessDenied, SecretNotFound
    from pipekey.manifest import parse_manifest

    environ = {"PIPEKEY__MARKETING__FACEBOOK__ACCT_43__ACCESS_TOKEN": "fake-token-acct43",
               "PIPEKEY__MARKETING__FACEBOOK__ACCT_42__APP_ID": "fake-app-acct42"}
    pipelines = {"ads": {"scope": "marketing/facebook/{account}", "optional": ["access_token"]}}
    manifest = parse_manifest({"pipelines": pipelines}, Path("pipekey.toml"), None)
    lk = pipekey.Pipekey([EnvBackend(environ=environ)], manifest=manifest, env=manifest.env)
    with lk.pipeline("ads", account="acct_43") as run:  # the owner reads it
        assert run.secret("access_token") == "fake-token-acct43"
    for account in ("ACCT-43", "acct-43", "ACCT_43", "acct.43"):
        with lk.pipeline("ads", account=account) as run:
            with pytest.raises(SecretNotFound) as info:
                run.secret("access_token")
            assert "fake-token" not in str(info.value)
    with lk.pipeline("ads", account="acct_42") as run:
        with pytest.raises((SecretNotFound, AccessDenied)):
            run.secret("acct_43__access_token")
        with pytest.raises((SecretNotFound, AccessDenied)):
            run.get("marketing/facebook__acct_43__access_token")
        with pytest.raises((SecretNotFound, AccessDenied)) as info:
            run.get("marketing/facebook/acct_42/ACCT_43__ACCESS_TOKEN")
        assert "fake-token" not in str(info.value)


def test_explain_says_why_a_key_has_no_variable() -> None:
    """explain's attempt for an unmappable key is 'absent' with the rule it breaks."""
    import pipekey

    lk = pipekey.Pipekey([EnvBackend(environ={"PIPEKEY__A__B": "fake-token-ab"})])
    [attempt] = lk.explain("a__b").attempts
    assert attempt.outcome == "absent" and attempt.path.startswith("(no variable")
    assert "not mappable: segment 1 'a__b' contains the separator '__'" == attempt.detail
    assert "fake-token" not in attempt.describe()
