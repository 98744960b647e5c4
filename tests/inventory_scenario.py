"""A small world for the inventory's tests: a manifest, a local store and an env backend with
fake values, and an audit file written by real runs (reads, a denial, an undeclared read).

What it sets up, and so what the inventory must show (in dev):

* ``marketing/ads/acct_42/api_token``: ok, read by a run of ``ads`` (team_a);
* ``marketing/ads/acct_43/api_token``: missing (``ads`` requires it, nothing holds it);
* ``finance/billing/stripe_key``: stale (``billing`` says rotate_after = "1s"), read;
* ``finance/billing/legacy_key``: orphan (under billing's scope, declared by none), read by a
  run of ``billing``: sprawl;
* ``ops/notify/webhook``: shadowed (env backend first, local copy behind);
* ``old/unused``: orphan (no pipeline may read it);
* ``shared/slack_token``: ok, read; a run of ``billing`` was denied
  ``marketing/ads/acct_42/api_token``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = """\
env = "dev"
environments = ["dev", "prod"]
rotate_after = "3650d"
chain = ["env", "local"]

[backends.env]
type = "env"

[backends.local]
type = "local"

[audit]
sinks = [{ type = "file", path = "audit/audit.jsonl" }]

[pipelines.ads]
scope = "marketing/ads/{account}"
requires = ["api_token"]
optional = ["refresh_token"]
instances = [{ account = "acct_42" }, { account = "acct_43" }]
connections = { warehouse = "connections/warehouse_{account}" }
dags = ["ads_report"]
teams = ["team_a"]

[pipelines.billing]
scope = "finance/billing"
requires = ["stripe_key"]
rotate_after = "1s"
dags = ["billing_report"]
teams = ["team_b"]

[pipelines.notify]
scope = "ops/notify"
requires = ["webhook"]
shared = ["slack_token"]
"""

STORED = ["marketing/ads/acct_42/api_token", "connections/warehouse_acct_42",
          "connections/warehouse_acct_43", "finance/billing/stripe_key",
          "finance/billing/legacy_key", "ops/notify/webhook", "old/unused",
          "shared/slack_token"]
SHADOW_VAR = "PIPEKEY__OPS__NOTIFY__WEBHOOK"


@dataclass
class Scenario:
    root: Path
    manifest: Path
    values: dict[str, str] = field(default_factory=dict)   #: key -> fake value
    env: dict[str, str] = field(default_factory=dict)      #: what a subprocess needs

    @property
    def audit(self) -> Path:
        return self.root / "audit" / "audit.jsonl"

    def all_values(self) -> list[str]:
        return [*self.values.values(), self.env[SHADOW_VAR]]


def make(root: Path, master_key: str) -> Scenario:
    """Write the manifest, seed the store, run the pipelines; returns what was seeded."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "pipekey.toml"
    manifest.write_text(MANIFEST)
    return seed(manifest, master_key)


def seed(manifest: Path, master_key: str) -> Scenario:
    """Seed the stores of ``manifest`` (holding :data:`MANIFEST`) and run the pipelines."""
    import pipekey
    from pipekey.errors import AccessDenied

    s = Scenario(manifest.parent, manifest)
    for key in STORED:
        value = f"fake-s3cr3t-{secrets.token_hex(8)}"
        if key.startswith("connections/"):
            value = json.dumps({"conn_type": "postgres", "host": "db.example.com",
                                "login": "reporter", "password": value})
        s.values[key] = value
    s.env = {"PIPEKEY_MASTER_KEY": master_key, "PIPEKEY_CONFIG": str(manifest),
             SHADOW_VAR: f"fake-shadow-{secrets.token_hex(8)}"}
    saved = {k: os.environ.get(k) for k in s.env}
    os.environ.update(s.env)
    try:
        lk = pipekey.load(manifest, env="dev")
        for key, value in s.values.items():
            lk.set(key, value, backend="local")
        time.sleep(1.1)  # billing's rotate_after = "1s": its key is stale from now on
        with lk.pipeline("ads", account="acct_42", run_name="ads_report__run_1") as run:
            run.secret("api_token")
        with lk.pipeline("notify", run_name="notify__run_1") as run:
            run.get("shared/slack_token")
        with lk.pipeline("billing", run_name="billing_report__run_7") as run:
            run.get("finance/billing/legacy_key")       # allowed, undeclared: sprawl
            try:
                run.get("marketing/ads/acct_42/api_token")  # another pipeline's: denied
            except AccessDenied:
                pass
        lk.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return s
