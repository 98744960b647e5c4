"""Credentials minted per run (``[credentials.NAME]``, referenced as ``dynamic:NAME``).

Placeholder until the framework branch (i21-pg) lands: it owns this package's ``__init__``
and ``base``; ``vault_database`` is the Vault variant.
"""
