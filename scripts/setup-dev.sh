#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, in one pip resolve
# (dlt and boto3 installed separately break boto3). Safe to re-run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests use. Installed only when missing, so a warm machine skips apt.
APT_PACKAGES=(postgresql redis-server)   # redis-server: the Celery broker of tests/test_airflow_deployment.py
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

python -m pip install --progress-bar off --upgrade pip
python -m pip install --progress-bar off -e '.[all,test]' -c scripts/constraints.txt
python -m pip check || echo "warning: pip check reports conflicts (see above)" >&2
