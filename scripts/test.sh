#!/usr/bin/env bash
# Start the services the tests need, run pytest, stop only what this run started.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local/run
record=".local/run/test-started-$$"
cleanup() { scripts/services/down.sh --record "$record" || true; }
trap cleanup EXIT
scripts/services/up.sh --record "$record"
.venv/bin/pytest "$@"
