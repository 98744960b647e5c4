#!/usr/bin/env bash
# The quickstart on the embedded local store: no server, no cloud account, fake values only.
# Runs in a fresh folder each time (or $QUICKSTART_DIR) so it can be re-run safely.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="${QUICKSTART_DIR:-$(mktemp -d -t pipekey-quickstart.XXXXXX)}"
mkdir -p "$work" && cd "$work"
cp "$here/pipekey.toml" .
export RUNTIME__DLTHUB_TELEMETRY=false          # dlt: no telemetry calls
export PROVIDERS__ENABLE_AIRFLOW_SECRETS=false  # dlt: see quickstart.py for why
echo "== working in $work"

echo "== pipekey init: a 0600 master key file and an encrypted store"
pipekey init

echo "== pipekey set: values from stdin (or a hidden prompt), never from argv"
for account in acct_42 acct_43; do
    # a fake token per account; only the store ever holds it
    printf '%s' "fake-token-$account-$(python -c 'import secrets; print(secrets.token_hex(8))')" \
        | pipekey set "marketing/ads/$account/api_token"
    printf '{"conn_type": "duckdb", "host": "%s/warehouse_%s.duckdb"}' "$work" "$account" \
        | pipekey set "connections/warehouse_$account"
done
printf '%s' 'fake-slack-token' | pipekey set shared/slack_token

echo "== pipekey check: every requirement of every instance of every pipeline"
pipekey check

echo "== pipekey explain --pipeline: the scope walk for one name"
pipekey explain --pipeline ads_report --param account=acct_42 slack_token

echo "== two dlt pipelines at once, one pipeline definition, each run with its own token"
python "$here/quickstart.py"

echo "== pipekey run: a command gets one run's secrets in its environment"
pipekey run --pipeline ads_report --param account=acct_43 -- \
    sh -c 'echo "  the child sees API_TOKEN (${#API_TOKEN} characters) and AIRFLOW_CONN_WAREHOUSE: ${AIRFLOW_CONN_WAREHOUSE:+set}"'
echo "== quickstart done"
