"""latchkey: every pipeline run gets exactly the secrets it needs, from the stores you use.

    import latchkey
    lk = latchkey.load()                  # ./latchkey.toml, $LATCHKEY_CONFIG, or the local store
    lk.get("shared/slack_token")
    lk.explain("shared/slack_token")      # backend, path, version, every place looked

Importing latchkey loads no cloud SDK; each is imported when a backend of its type is built.
"""

from .backends import Backend, Secret, VersionInfo
from .chain import Resolution
from .client import Latchkey, load
from .errors import (
    AccessDenied,
    Attempt,
    BackendError,
    BackendUnavailable,
    InvalidKey,
    LatchkeyError,
    ManifestError,
    MissingDependency,
    NoMasterKey,
    ReadOnlyBackend,
    SecretNotFound,
    StoreCorrupt,
    UsageError,
    WrongMasterKey,
)
from .keys import validate_key

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "Attempt",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "InvalidKey",
    "Latchkey",
    "LatchkeyError",
    "ManifestError",
    "MissingDependency",
    "NoMasterKey",
    "ReadOnlyBackend",
    "Resolution",
    "Secret",
    "SecretNotFound",
    "StoreCorrupt",
    "UsageError",
    "VersionInfo",
    "WrongMasterKey",
    "__version__",
    "load",
    "validate_key",
]
