#!/usr/bin/env bash
# Refresh scripts/requirements-lock.txt, the complete lock CI and scripts/setup-dev.sh install
# from, on purpose: from pyproject.toml's ranges (every extra and the test tools) plus the
# build tools, resolved once for every Python pipekey supports. Review the diff, run the whole
# suite (bash .ci/run), commit. Users are not affected: `pip install pipekey[...]` keeps the
# open ranges of pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python -m pip install --progress-bar off -q 'uv>=0.9'
python -m uv pip compile pyproject.toml scripts/build-requirements.in \
    --extra all --extra test --universal --python-version 3.10 \
    --no-header --annotation-style line --quiet \
    --output-file scripts/requirements-lock.txt "$@"
{ printf '%s\n' \
    "# The complete lock of every package CI installs, made by scripts/lock.sh (uv pip compile)" \
    "# from pyproject.toml. Do not edit by hand: refresh it with \`bash scripts/lock.sh\`" \
    "# (add --upgrade-package NAME to move one package). tests/project/test_lock.py checks it agrees" \
    "# with pyproject.toml."
  cat scripts/requirements-lock.txt; } > scripts/requirements-lock.txt.new
mv scripts/requirements-lock.txt.new scripts/requirements-lock.txt
echo "scripts/requirements-lock.txt: $(grep -c '==' scripts/requirements-lock.txt) pins"
