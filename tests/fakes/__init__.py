"""Protocol-level servers for stores that cannot be installed here (Vault, GCP Secret
Manager, Azure Key Vault), written from each API's documentation: only the endpoints pipekey
uses, with the real error shapes. Each listens on 127.0.0.1 and stops with its fixture."""
