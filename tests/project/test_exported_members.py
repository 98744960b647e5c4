"""The public surface: __all__ is exactly the public names, and each resolves."""

from __future__ import annotations

import pipekey


def test_all_matches_public_names() -> None:
    """Every public attribute of pipekey is in __all__, and every name in __all__ exists
    (the names imported on first use included: dir() lists them, getattr resolves them)."""
    public = {
        name for name in dir(pipekey)
        if not name.startswith("_")
        and getattr(getattr(pipekey, name), "__module__", "").startswith("pipekey")
    }
    public.add("__version__")
    assert set(pipekey.__all__) == public
    assert len(pipekey.__all__) == len(set(pipekey.__all__))


def test_error_tree() -> None:
    """The documented hierarchy and exit codes hold."""
    assert issubclass(pipekey.InvalidKey, pipekey.UsageError)
    assert issubclass(pipekey.SecretNotFound, pipekey.PipekeyError)
    assert issubclass(pipekey.WrongMasterKey, pipekey.BackendError)
    assert pipekey.UsageError.exit_code == 2 and pipekey.SecretNotFound.exit_code == 1
    assert pipekey.BackendUnavailable("ssm", "x").backend == "ssm"


def test_lazy_names_resolve_once() -> None:
    """A name imported on first use is the defining module's object; an unknown name is an
    AttributeError, as for any module."""
    import pipekey.client

    assert pipekey.load is pipekey.client.load
    assert "load" in vars(pipekey)  # cached: later lookups skip __getattr__
    try:
        pipekey.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("pipekey.no_such_name resolved")
