"""The Python side of the quickstart: one pipeline definition, two accounts, run at once.

Each thread opens its own run context; each sees only its own account's token. Prints names,
backends, versions and the scope walk. Never a value.
"""

from __future__ import annotations

import threading

import latchkey


def load_account(lk: latchkey.Latchkey, account: str, report: dict) -> None:
    with lk.pipeline("facebook_ads", account=account, run_name=f"quickstart__{account}") as run:
        token = run.secret("access_token")    # this run's own token, prefetched on entry
        # Call the API with `token` here; only its provenance is printed.
        found = run.explain("access_token").secret
        report[account] = (f"run {run.name}: access_token from {found.backend} "
                           f"{found.key} (version {found.version}), {len(token)} characters, "
                           f"ready in {run.ready_seconds * 1000:.1f} ms")
        assert latchkey.current() is run          # each thread sees its own run


def main() -> None:
    lk = latchkey.load()
    print(f"latchkey {latchkey.__version__}: env={lk.env}, chain={[b.name for b in lk.chain]}")
    report: dict[str, str] = {}
    threads = [threading.Thread(target=load_account, args=(lk, a, report))
               for a in ("acct_42", "acct_43")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for account in sorted(report):
        print(f"  {account}: {report[account]}")

    shared = lk.explain("shared/slack_token")
    walk = ", ".join(f"{a.backend}={a.outcome}" for a in shared.attempts)
    print(f"  shared/slack_token: from {shared.secret.backend} [{walk}]")

    try:
        with lk.pipeline("facebook_ads", account="acct_99"):
            pass
    except latchkey.MissingSecrets as exc:
        print(f"  a run whose secrets are missing fails at once, saying where it looked:\n    {exc}")

    with lk.pipeline("facebook_ads", account="acct_42") as run:
        try:
            run.get("marketing/facebook/acct_43/access_token")
        except latchkey.AccessDenied as exc:
            print(f"  and a run cannot read another account's secrets:\n    {exc}")


if __name__ == "__main__":
    main()
