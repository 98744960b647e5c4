#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, in one pip resolve
# (dlt and boto3 installed separately break boto3), at the versions of the committed lock
# scripts/requirements-lock.txt (refreshed on purpose with scripts/lock.sh), so a release of
# any dependency tomorrow cannot change what CI runs. Safe to re-run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests use. Installed only when missing, so a warm machine skips apt.
# redis-server: the Celery broker of tests/deploy/test_airflow_deployment.py; chromium and
# chromium-driver: the inventory's pages in a real browser (tests/integrations/test_inventory_ui.py)
APT_PACKAGES=(postgresql redis-server chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

LOCK=scripts/requirements-lock.txt
# pip and the build tools first, from the lock; the editable build then uses them (no build
# isolation, which would fetch the newest setuptools).
python -m pip install --progress-bar off -q -c "$LOCK" pip setuptools wheel
python -m pip install --progress-bar off --no-build-isolation -e '.[all,test]' -c "$LOCK"
python -m pip check || echo "warning: pip check reports conflicts (see above)" >&2
