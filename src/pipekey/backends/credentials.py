"""The environment variables each backend type takes store credentials from, in one place.

``pipekey run`` keeps these from the command it starts (with ``--pristine`` and without): a
child gets what its run resolved plus the parent's non-secret environment, not the keys to
every store. The list covers the SDKs' default credential variables and the variables a
backend's ``auth`` names in the manifest (Vault's ``token_env`` and ``secret_id_env``, Azure's
``client_secret_env``).

Withholding a variable is not a boundary: files that hold credentials (the local store's key
file, ``~/.aws/credentials``, ``~/.vault-token``, a service-account JSON, a Kubernetes token)
stay readable by every process of the same OS user. See docs/security.md.
"""

from __future__ import annotations

from typing import Iterable

from .base import BackendConfig
from .local_format import MASTER_KEY_ENV

__all__ = ["AWS_VARS", "BY_TYPE", "credential_vars"]

#: botocore's credential variables (``AWS_SECURITY_TOKEN`` is the legacy session token name;
#: the container token authorizes ECS/EKS-Pod-Identity credential requests)
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
#: azure-identity's EnvironmentCredential secrets (DefaultAzureCredential tries it first)
AZURE_VARS = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_PASSWORD")

#: backend type -> the variables it, or its SDK's default credential chain, reads secrets from
BY_TYPE: dict[str, tuple[str, ...]] = {
    "env": (),
    "files": (),
    "local": (MASTER_KEY_ENV,),
    "aws_ssm": AWS_VARS,
    "aws_secrets_manager": AWS_VARS,
    "dynamodb": (*AWS_VARS, MASTER_KEY_ENV),   # client-side encryption under the master key
    "vault": ("VAULT_TOKEN",),                 # hvac's default token, whatever the auth
    "gcp_secret_manager": ("GOOGLE_APPLICATION_CREDENTIALS",),
    "azure_key_vault": AZURE_VARS,
}


def credential_vars(configs: Iterable[BackendConfig]) -> set[str]:
    """Every variable that holds (or points to) a store credential for these backends,
    ``PIPEKEY_MASTER_KEY`` always included."""
    names = {MASTER_KEY_ENV}
    for config in configs:
        names.update(BY_TYPE.get(config.type, ()))
        names.update(_auth_vars(config))
    return names


def _auth_vars(config: BackendConfig) -> set[str]:
    """The variables a backend's ``auth`` section names (or implies)."""
    if config.type == "vault":
        from .vault_auth import AppRoleAuth, AwsIamAuth, TokenAuth

        auth = config.auth  # type: ignore[attr-defined]
        if isinstance(auth, TokenAuth):
            return {auth.token_env}
        if isinstance(auth, AppRoleAuth):
            return {auth.secret_id_env}
        if isinstance(auth, AwsIamAuth):  # signs with the default AWS credentials
            return set(AWS_VARS)
    if config.type == "azure_key_vault":
        from .azure_key_vault import ClientSecretAuth

        auth = config.auth  # type: ignore[attr-defined]
        if isinstance(auth, ClientSecretAuth):
            return {auth.client_secret_env}
    return set()
