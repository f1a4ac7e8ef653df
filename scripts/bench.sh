#!/usr/bin/env bash
# Run every benchmark against the local services (started here if needed, stopped after).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local/run
record=".local/run/bench-started-$$"
trap 'scripts/services/down.sh --record "$record" || true' EXIT
scripts/services/up.sh --record "$record"
export DATABASE_URL="${BENCH_DATABASE_URL:-postgresql+asyncpg://sight:sight-local@127.0.0.1:${PG_PORT:-54329}/sight}"
.venv/bin/python -m alembic upgrade head >/dev/null
for script in bench/[a-z]*.py; do
  echo "== $script"
  .venv/bin/python "$script"
done
