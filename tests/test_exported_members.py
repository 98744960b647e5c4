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
