#!/usr/bin/env bash
# Stop the local stack: scripts/services/down.sh [--record FILE] [postgres|redis|neo4j|pubsub|neo4j-scratch ...]
# Without --record: stops the named services (default: all four and neo4j-scratch); stopping a stopped service
# is a no-op. With --record FILE: stops only the services listed in FILE (written by
# `up.sh --record FILE`), then deletes FILE; a missing FILE means there is nothing to stop.
set -euo pipefail
SVC=down
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

parse_stack_args 6 "$@"

if [[ -n "$record" ]]; then
    if [[ ${#services[@]} -gt 0 ]]; then
        echo "down.sh: --record FILE and service names are mutually exclusive" >&2
        exit 2
    fi
    if [[ ! -f "$record" ]]; then
        log "no record file $record: nothing to stop"
        exit 0
    fi
    while read -r s; do
        case "$s" in
        postgres | redis | neo4j | pubsub | neo4j-scratch) services+=("$s") ;;
        "") ;;
        *) log "ignoring unknown service '$s' in $record" ;;
        esac
    done <"$record"
    if [[ ${#services[@]} -eq 0 ]]; then
        rm -f "$record"
        log "record file listed no services: nothing to stop"
        exit 0
    fi
elif [[ ${#services[@]} -eq 0 ]]; then
    services=("${SIGHTOPS_ALL_SERVICES[@]}" "${SIGHTOPS_ON_DEMAND_SERVICES[@]}")
fi

ensure_state_dirs
t0="$(now)"
run_each stop "${services[@]}"

failed=()
for s in "${ordered[@]}"; do
    cat "$work/$s.out"
    if [[ "${rcs[$s]}" -ne 0 ]]; then
        printf '%s: FAILED to stop (exit %s)\n' "$s" "${rcs[$s]}"
        failed+=("$s")
    fi
done

if [[ -n "$record" ]]; then
    if [[ ${#failed[@]} -gt 0 ]]; then
        printf '%s\n' "${failed[@]}" >"$record" # keep what is still running, for a retry
    else
        rm -f "$record"
    fi
fi
if [[ ${#failed[@]} -gt 0 ]]; then
    log "FAILED to stop: ${failed[*]}"
    exit 1
fi
log "stopped: ${ordered[*]} (total $(elapsed "$t0")s)"
