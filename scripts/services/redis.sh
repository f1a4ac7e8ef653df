#!/usr/bin/env bash
# Redis (Debian's redis-server 7) for the local stack, on 127.0.0.1:$REDIS_PORT, no auth,
# no persistence (--save '' --appendonly no). systemd is not used.
#   scripts/services/redis.sh install|start|stop|status
# Working dir $SIGHTOPS_STATE/redis, log $SIGHTOPS_STATE/log/redis.log,
# pidfile $SIGHTOPS_STATE/run/redis.pid (written by redis itself, --daemonize yes).
set -euo pipefail
SVC=redis
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REDIS_DIR="$SIGHTOPS_STATE/redis"
REDIS_LOG="$SIGHTOPS_LOG_DIR/redis.log"
REDIS_PIDFILE="$SIGHTOPS_RUN_DIR/redis.pid"

svc_log() { printf '%s\n' "$REDIS_LOG"; }

svc_pid() { read_pidfile "$REDIS_PIDFILE"; }

svc_running() {
    local pid
    pid="$(svc_pid)"
    [[ -n "$pid" ]] && pid_alive "$pid" && pid_cmdline_has "$pid" redis-server
}

rcli() { timeout 5 redis-cli -h "$SIGHTOPS_HOST" -p "$REDIS_PORT" "$@"; }

svc_healthy() {
    command -v redis-cli >/dev/null 2>&1 || return 1
    [[ "$(rcli ping 2>/dev/null)" == PONG ]]
}

svc_first_start() { [[ ! -d "$REDIS_DIR" ]]; }

svc_install() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        local t0
        t0="$(now)"
        log "redis-server not found; installing Debian package redis-server"
        apt_install redis-server
        command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after apt-get install"
        log "redis-server installed in $(elapsed "$t0")s ($(redis-server --version | awk '{print $3}' | sed 's/^v=//'))"
        SIGHTOPS_INSTALLED_NOW=1
    fi
    mkdir -p "$REDIS_DIR"
}

svc_launch() {
    rm -f "$REDIS_PIDFILE"
    if port_open "$SIGHTOPS_HOST" "$REDIS_PORT"; then
        log "port $REDIS_PORT is already in use by another process"
        return 1
    fi
    # --daemonize yes: redis forks, detaches and writes the pidfile itself.
    # shellcheck disable=SC2094 # --logfile and our redirect append to the same log
    closefds_exec redis-server \
        --port "$REDIS_PORT" --bind "$SIGHTOPS_HOST" --protected-mode yes \
        --daemonize yes --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" --dir "$REDIS_DIR" \
        --save '' --appendonly no \
        </dev/null >>"$REDIS_LOG" 2>&1
}

svc_wait_ready() {
    local timeout="$1" deadline pid
    deadline="$(deadline_in "$timeout")"
    wait_until 10 "" "redis pidfile" test -s "$REDIS_PIDFILE" || return 1
    pid="$(svc_pid)"
    wait_until "$(remaining "$deadline")" "$pid" "redis PING -> PONG" svc_healthy
}

svc_stop_server() {
    local pid
    pid="$(svc_pid)"
    # SIGTERM: with no persistence configured redis exits at once.
    kill_pid "$pid" "$SIGHTOPS_STOP_GRACE" || return 1
    rm -f "$REDIS_PIDFILE"
}

svc_main "$@"
