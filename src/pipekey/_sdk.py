"""The optional SDKs, imported lazily and only here.

Each function imports one SDK when first needed and returns it; without the SDK it raises
``MissingDependency``, whose message is the ``pip install 'pipekey[extra]'`` line. Modules
that need an SDK call these instead of importing it, so ``import pipekey`` loads none.
"""

from __future__ import annotations

from types import ModuleType

from .errors import MissingDependency

__all__ = ["azure_modules", "boto3_module", "hvac_module", "secretmanager_module"]


def boto3_module(what: str = "the AWS backends") -> ModuleType:
    """boto3, or MissingDependency saying that ``what`` needs the ``aws`` extra."""
    try:
        import boto3
    except ImportError:
        raise MissingDependency(what, "aws") from None
    module: ModuleType = boto3  # no stubs: typed here, once
    return module


def hvac_module(what: str = "the vault backend") -> ModuleType:
    """hvac, or MissingDependency saying that ``what`` needs the ``vault`` extra."""
    try:
        import hvac
    except ImportError:
        raise MissingDependency(what, "vault") from None
    module: ModuleType = hvac  # no stubs: typed here, once
    return module


def secretmanager_module() -> ModuleType:
    """google.cloud.secretmanager, or MissingDependency naming the ``gcp`` extra."""
    try:
        from google.cloud import secretmanager
    except ImportError:
        raise MissingDependency("the gcp_secret_manager backend", "gcp") from None
    return secretmanager


def azure_modules() -> tuple[ModuleType, ModuleType]:
    """(azure.keyvault.secrets, azure.identity), or MissingDependency naming the ``azure`` extra."""
    try:
        import azure.identity
        import azure.keyvault.secrets
    except ImportError:
        raise MissingDependency("the azure_key_vault backend", "azure") from None
    return azure.keyvault.secrets, azure.identity
