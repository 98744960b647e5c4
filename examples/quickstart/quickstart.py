"""The Python side of the quickstart: resolve each account's token and say where it came from.

Prints names, backends, versions and the lookup walk. Never a value.
"""

from __future__ import annotations

import latchkey


def main() -> None:
    lk = latchkey.load()
    print(f"latchkey {latchkey.__version__}: env={lk.env}, chain={[b.name for b in lk.chain]}")
    for account in ("acct_42", "acct_43"):
        key = f"marketing/facebook/{account}/access_token"
        token = lk.get_secret(key)
        # Use `token.value` to call the API; only its provenance is printed here.
        print(f"  {key}: from {token.backend} (version {token.version}), "
              f"{len(token.value)} characters")

    shared = lk.explain("shared/slack_token")
    walk = ", ".join(f"{a.backend}={a.outcome}" for a in shared.attempts)
    print(f"  shared/slack_token: from {shared.secret.backend} [{walk}]")

    try:
        lk.get("marketing/facebook/acct_99/access_token")
    except latchkey.SecretNotFound as exc:
        print(f"  a missing key says where it looked: {exc}")


if __name__ == "__main__":
    main()
