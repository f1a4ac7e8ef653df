#!/usr/bin/env bash
# Start the local stack: scripts/services/up.sh [--record FILE] [postgres|redis|neo4j|pubsub|neo4j-scratch ...]
# Default: all four (neo4j-scratch, the restore drills' second Neo4j, only when named). Each service that is not already running and healthy is installed (if
# needed) and started; services start in parallel. Prints one line per service with its
# readiness time. Exits non-zero (after showing the tail of the failing service's log) if any
# service does not become ready within 60 s (120 s on a first install / fresh data dir).
# --record FILE: append the names of the services THIS invocation started to FILE, so that
# `down.sh --record FILE` stops exactly those (e.g. a test session that must leave an already
# running stack alone).
set -euo pipefail
SVC=up
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

parse_stack_args 9 "$@"
[[ ${#services[@]} -gt 0 ]] || services=("${SIGHTOPS_ALL_SERVICES[@]}")

ensure_state_dirs
t0="$(now)"
run_each start "${services[@]}"

failed=()
for s in "${ordered[@]}"; do
    cat "$work/$s.out"
    if [[ "${rcs[$s]}" -eq 0 ]]; then
        if [[ -n "$record" && "$(cat "$work/$s.result" 2>/dev/null)" == started ]]; then
            mkdir -p "$(dirname "$record")"
            printf '%s\n' "$s" >>"$record"
        fi
    else
        printf '%s: FAILED (exit %s); log: %s/%s.log\n' "$s" "${rcs[$s]}" "$SIGHTOPS_LOG_DIR" "$s"
        failed+=("$s")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    log "FAILED: ${failed[*]} (total $(elapsed "$t0")s)"
    exit 1
fi
log "all ready: ${ordered[*]} (total $(elapsed "$t0")s)"
