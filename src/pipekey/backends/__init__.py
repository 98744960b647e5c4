"""Secret stores. Each type lives in its own module and is imported only when used, so a
manifest that names no cloud store loads no cloud SDK."""

from __future__ import annotations

import importlib

from .base import Backend, BackendConfig, BuildContext, Secret, VersionInfo

__all__ = ["BACKEND_TYPES", "Backend", "BackendConfig", "BuildContext", "Secret",
           "VersionInfo", "backend_class"]

#: manifest ``type`` -> "module:Class", relative to this package
BACKEND_TYPES: dict[str, str] = {
    "env": ".env:EnvBackend",
    "files": ".files:FilesBackend",
    "local": ".local:LocalBackend",
    "aws_ssm": ".aws_ssm:SsmBackend",
    "aws_secrets_manager": ".aws_secrets_manager:SecretsManagerBackend",
    "dynamodb": ".dynamodb:DynamoDbBackend",
    "vault": ".vault:VaultBackend",
    "gcp_secret_manager": ".gcp_secret_manager:GcpSecretManagerBackend",
    "azure_key_vault": ".azure_key_vault:AzureKeyVaultBackend",
}


def backend_class(type_name: str) -> type[Backend]:
    """The Backend class for a manifest ``type``.

    Raises:
        KeyError: the type is unknown (the caller words the error; it knows the field).
    """
    target = BACKEND_TYPES[type_name]
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name, __name__)
    cls: type[Backend] = getattr(module, attr)
    return cls
