"""latchkey: every pipeline run gets exactly the secrets it needs, from the stores you use.

    import latchkey
    lk = latchkey.load()                  # ./latchkey.toml, $LATCHKEY_CONFIG, or the local store
    lk.get("shared/slack_token")
    lk.explain("shared/slack_token")      # backend, path, version, every place looked
    with lk.pipeline("facebook_ads", account="acct_42") as run:
        run.secret("access_token")        # this run's own, found by the scope walk

Importing latchkey loads no cloud SDK; each is imported when a backend of its type is built.
"""

from .backends import Backend, Secret, VersionInfo
from .chain import Resolution
from .client import Latchkey, load
from .connection import Connection, InvalidConnection
from .errors import (
    AccessDenied,
    Attempt,
    BackendError,
    BackendUnavailable,
    InvalidKey,
    LatchkeyError,
    ManifestError,
    MissingDependency,
    MissingSecrets,
    NoMasterKey,
    ReadOnlyBackend,
    RunClosed,
    SecretNotFound,
    StoreCorrupt,
    UsageError,
    ValueTooLarge,
    WrongMasterKey,
)
from .keys import validate_key
from .run import Run, current

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "Attempt",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Connection",
    "InvalidConnection",
    "InvalidKey",
    "Latchkey",
    "LatchkeyError",
    "ManifestError",
    "MissingDependency",
    "MissingSecrets",
    "NoMasterKey",
    "ReadOnlyBackend",
    "Resolution",
    "Run",
    "RunClosed",
    "Secret",
    "SecretNotFound",
    "StoreCorrupt",
    "UsageError",
    "ValueTooLarge",
    "VersionInfo",
    "WrongMasterKey",
    "__version__",
    "current",
    "load",
    "validate_key",
]
