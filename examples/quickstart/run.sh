#!/usr/bin/env bash
# The quickstart on the embedded local store: no server, no cloud account, fake values only.
# Runs in a fresh folder each time (or $QUICKSTART_DIR) so it can be re-run safely.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="${QUICKSTART_DIR:-$(mktemp -d -t latchkey-quickstart.XXXXXX)}"
mkdir -p "$work" && cd "$work"
cp "$here/latchkey.toml" .
echo "== working in $work"

echo "== latchkey init: a 0600 master key file and an encrypted store"
latchkey init

echo "== latchkey set: values come from stdin (or a hidden prompt), never from argv"
printf '%s' 'fake-fb-token-for-acct-42' | latchkey set marketing/facebook/acct_42/access_token
printf '%s' 'fake-fb-token-for-acct-43' | latchkey set marketing/facebook/acct_43/access_token
printf '%s' 'fake-slack-token-v1' | latchkey set shared/slack_token
printf '%s' 'fake-slack-token-v2' | latchkey set shared/slack_token

echo "== latchkey get: masked unless --reveal"
latchkey get shared/slack_token

echo "== latchkey ls / history"
latchkey ls
latchkey history shared/slack_token

echo "== an environment variable earlier in the chain wins; explain shows the walk"
LATCHKEY__SHARED__SLACK_TOKEN=fake-from-env latchkey explain shared/slack_token

echo "== latchkey run: a command gets one run's secrets in its environment"
latchkey run --pipeline facebook_ads --param account=acct_42 -- \
    sh -c 'echo "  the child sees ACCESS_TOKEN (${#ACCESS_TOKEN} characters) and SLACK_TOKEN: ${SLACK_TOKEN:+set}"'

echo "== explain --pipeline: the scope walk, most specific level first"
latchkey explain --pipeline facebook_ads --param account=acct_43 access_token

echo "== the Python API: two accounts, one pipeline definition, at once"
LATCHKEY__SHARED__SLACK_TOKEN=fake-from-env python "$here/quickstart.py"

echo "== latchkey doctor"
latchkey doctor
echo "== quickstart done"
