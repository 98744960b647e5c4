"""The public surface: __all__ is exactly the public names, and each resolves."""

from __future__ import annotations

import latchkey


def test_all_matches_public_names() -> None:
    """Every public attribute of latchkey is in __all__, and every name in __all__ exists
    (the names imported on first use included: dir() lists them, getattr resolves them)."""
    public = {
        name for name in dir(latchkey)
        if not name.startswith("_")
        and getattr(getattr(latchkey, name), "__module__", "").startswith("latchkey")
    }
    public.add("__version__")
    assert set(latchkey.__all__) == public
    assert len(latchkey.__all__) == len(set(latchkey.__all__))


def test_error_tree() -> None:
    """The documented hierarchy and exit codes hold."""
    assert issubclass(latchkey.InvalidKey, latchkey.UsageError)
    assert issubclass(latchkey.SecretNotFound, latchkey.LatchkeyError)
    assert issubclass(latchkey.WrongMasterKey, latchkey.BackendError)
    assert latchkey.UsageError.exit_code == 2 and latchkey.SecretNotFound.exit_code == 1
    assert latchkey.BackendUnavailable("ssm", "x").backend == "ssm"


def test_lazy_names_resolve_once() -> None:
    """A name imported on first use is the defining module's object; an unknown name is an
    AttributeError, as for any module."""
    import latchkey.client

    assert latchkey.load is latchkey.client.load
    assert "load" in vars(latchkey)  # cached: later lookups skip __getattr__
    try:
        latchkey.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("latchkey.no_such_name resolved")
