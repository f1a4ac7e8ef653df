#!/usr/bin/env bash
# PostgreSQL 16 + pgvector for the local stack, from PyPI's `pgserver` (its bundled initdb /
# pg_ctl / postgres run an ordinary TCP server on 127.0.0.1:$PG_PORT).
#   scripts/services/postgres.sh install|start|stop|status
# Data: $SIGHTOPS_STATE/pg/data, unix socket dir $SIGHTOPS_STATE/pg/sock,
# log $SIGHTOPS_STATE/log/postgres.log. initdb refuses to run as root, so as root the server
# runs as the system user $SIGHTOPS_PG_OS_USER (default sightops, created with useradd -r).
# The bootstrap superuser is $PG_USER (sight / sight-local), so it is SUPERUSER: CREATE
# EXTENSION vector and CREATE DATABASE work. Host auth is scram-sha-256, local socket trust.
set -euo pipefail
SVC=postgres
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_USER="${PG_USER:-sight}"
PG_PASSWORD="${PG_PASSWORD:-sight-local}"
PG_DB="${PG_DB:-sight}"
PG_LOG="$SIGHTOPS_LOG_DIR/postgres.log"
PG_PIDFILE="$SIGHTOPS_RUN_DIR/postgres.pid"
PG_OS_USER=""
if [[ "$(id -u)" -eq 0 ]]; then
    PG_OS_USER="${SIGHTOPS_PG_OS_USER:-sightops}"
fi
PGBIN=""
# Outside the repo when the server user cannot reach it (e.g. a clone under /root, 0700).
PG_ELSEWHERE="${SIGHTOPS_PG_ELSEWHERE:-/var/lib/sightops}"

# world_traversable PATH: every existing directory from / down to PATH lets others in.
world_traversable() {
    local d="$1" mode
    while [[ -n "$d" && "$d" != "/" ]]; do
        if [[ -d "$d" ]]; then
            mode="$(stat -c %A "$d")"
            [[ "${mode:9:1}" == [xt] ]] || return 1
        fi
        d="$(dirname "$d")"
    done
}

path_key() { printf '%s' "$*" | sha1sum | cut -c1-10; }

PG_ROOT="$SIGHTOPS_STATE/pg"
if [[ -n "$PG_OS_USER" ]] && ! world_traversable "$SIGHTOPS_STATE"; then
    PG_ROOT="$PG_ELSEWHERE/pg-$(path_key "$SIGHTOPS_STATE")"
    PG_LOG="$PG_ROOT/postgres.log"
fi
PG_DATA="$PG_ROOT/data"
PG_SOCK="$PG_ROOT/sock"

svc_log() { printf '%s\n' "$PG_LOG"; }

# as_pg CMD...: run CMD as the OS user that owns the cluster
as_pg() {
    if [[ -n "$PG_OS_USER" ]]; then
        runuser -u "$PG_OS_USER" -- "$@"
    else
        "$@"
    fi
}

find_pgbin() {
    [[ -n "$PGBIN" ]] && return 0
    local pkg=""
    if [[ -x "$SIGHTOPS_PYTHON" ]]; then
        # find_spec does not import the package (fast, no side effects)
        pkg="$("$SIGHTOPS_PYTHON" -c 'import importlib.util as u; s = u.find_spec("pgserver"); print(s.submodule_search_locations[0] if s else "")' 2>/dev/null || true)"
    fi
    if [[ -n "$pkg" && -x "$pkg/pginstall/bin/postgres" ]]; then
        PGBIN="$pkg/pginstall/bin"
        relocate_pgbin
        return 0
    fi
    return 1
}

# The server user must execute the binaries: when the venv is not reachable for it,
# run a copy of pgserver's install tree from $PG_ELSEWHERE (made once per build).
relocate_pgbin() {
    [[ -n "$PG_OS_USER" ]] || return 0
    world_traversable "$PGBIN" && return 0
    # The binaries find their vendored shared libraries through
    # RPATH $ORIGIN/../../../pgserver.libs, so the copy keeps that layout.
    local src="${PGBIN%/bin}" dest site
    site="$(dirname "$(dirname "$src")")"
    dest="$PG_ELSEWHERE/pginstall-$(path_key "$src" "$(stat -c %Y "$src/bin/postgres")")"
    if [[ ! -x "$dest/pgserver/pginstall/bin/postgres" ]]; then
        log "copying PostgreSQL binaries to $dest (the venv is not reachable for $PG_OS_USER)"
        mkdir -p "$PG_ELSEWHERE"
        chmod 755 "$PG_ELSEWHERE"
        rm -rf "$dest.tmp"
        mkdir -p "$dest.tmp/pgserver"
        cp -a "$src" "$dest.tmp/pgserver/pginstall"
        [[ -d "$site/pgserver.libs" ]] && cp -a "$site/pgserver.libs" "$dest.tmp/pgserver.libs"
        chmod -R a+rX "$dest.tmp"
        rm -rf "$dest"
        mv "$dest.tmp" "$dest"
    fi
    PGBIN="$dest/pgserver/pginstall/bin"
}

# Quick probe over TCP with the app's credentials.
pg_query() { # SQL [DB]
    PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=3 timeout 10 \
        "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -At -h "$SIGHTOPS_HOST" -p "$PG_PORT" \
        -U "$PG_USER" -d "${2:-$PG_DB}" -c "$1"
}

postmaster_pid() {
    local pid=""
    [[ -r "$PG_DATA/postmaster.pid" ]] && read -r pid <"$PG_DATA/postmaster.pid" 2>/dev/null || true
    [[ "$pid" =~ ^[0-9]+$ ]] && printf '%s\n' "$pid"
    return 0
}

svc_pid() { postmaster_pid; }

svc_running() {
    local pid
    pid="$(postmaster_pid)"
    [[ -n "$pid" ]] && pid_alive "$pid" && pid_cmdline_has "$pid" postgres
}

svc_healthy() {
    find_pgbin || return 1
    [[ "$(pg_query 'SELECT 1' 2>/dev/null)" == 1 ]]
}

svc_first_start() { [[ ! -s "$PG_DATA/PG_VERSION" ]]; }

ensure_os_user() {
    [[ -n "$PG_OS_USER" ]] || return 0
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        log "creating system user $PG_OS_USER (initdb refuses to run as root)"
        useradd -r -M -d /nonexistent -s /usr/sbin/nologin -c "sight-ops local PostgreSQL" "$PG_OS_USER"
    fi
    # The server user must reach the binaries and the state dir.
    if ! runuser -u "$PG_OS_USER" -- test -x "$PGBIN/postgres"; then
        die "user $PG_OS_USER cannot execute $PGBIN/postgres (a parent directory is not world-traversable, e.g. /root is 0700). Put the repo (and its .venv) somewhere like /work or /srv, or chmod o+x the parents."
    fi
    if [[ "$PG_ROOT" == "$PG_ELSEWHERE"/* ]]; then
        mkdir -p "$PG_ELSEWHERE"
        chmod 755 "$PG_ELSEWHERE"
    fi
    if ! runuser -u "$PG_OS_USER" -- test -x "$(dirname "$PG_ROOT")"; then
        die "user $PG_OS_USER cannot traverse $(dirname "$PG_ROOT"); set SIGHTOPS_PG_ELSEWHERE to a world-traversable directory."
    fi
}

svc_install() {
    if ! find_pgbin; then
        log "pgserver not found in $SIGHTOPS_PYTHON's environment; installing it from PyPI"
        local pip="${SIGHTOPS_PYTHON%/*}/pip"
        [[ -x "$pip" ]] || die "no pip at $pip; create the venv first (python -m venv .venv && .venv/bin/pip install -e '.[dev]')"
        timeout 900 "$pip" install --quiet pgserver </dev/null || die "pip install pgserver failed"
        find_pgbin || die "pgserver installed but its pginstall/bin/postgres was not found"
        SIGHTOPS_INSTALLED_NOW=1
    fi
    ensure_os_user

    mkdir -p "$PG_ROOT" "$PG_SOCK"
    touch "$PG_LOG"
    if [[ -n "$PG_OS_USER" ]]; then
        chown "$PG_OS_USER:" "$PG_ROOT" "$PG_SOCK" "$PG_LOG"
        # data dir may predate a change of SIGHTOPS_PG_OS_USER
        if [[ -d "$PG_DATA" && "$(stat -c %U "$PG_DATA")" != "$PG_OS_USER" ]]; then
            chown -R "$PG_OS_USER:" "$PG_DATA"
        fi
    fi

    if [[ ! -s "$PG_DATA/PG_VERSION" ]]; then
        if [[ -e "$PG_DATA" ]]; then
            log "removing incomplete data dir $PG_DATA"
            rm -rf "$PG_DATA"
        fi
        local t0 pwfile rc=0
        t0="$(now)"
        pwfile="$(mktemp "$PG_ROOT/.pwfile.XXXXXX")"
        printf '%s\n' "$PG_PASSWORD" >"$pwfile"
        [[ -n "$PG_OS_USER" ]] && chown "$PG_OS_USER:" "$pwfile"
        log "initdb $PG_DATA (superuser $PG_USER)"
        as_pg timeout 180 "$PGBIN/initdb" -D "$PG_DATA" -U "$PG_USER" --pwfile="$pwfile" \
            -E UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 \
            >>"$PG_LOG" 2>&1 </dev/null || rc=$?
        rm -f "$pwfile"
        if [[ "$rc" -ne 0 ]]; then
            tail_log "$PG_LOG" 30
            die "initdb failed (exit $rc)"
        fi
        log "initdb done in $(elapsed "$t0")s"
        SIGHTOPS_INSTALLED_NOW=1
    fi
}

svc_launch() {
    local sock_opt="$PG_SOCK"
    # Unix socket paths are limited to 107 bytes; TCP is what everything uses anyway.
    if ((${#PG_SOCK} + 20 > 107)); then
        log "socket dir path too long for a unix socket; TCP only"
        sock_opt=""
    fi
    rm -f "$PG_PIDFILE"
    if [[ -f "$PG_DATA/postmaster.pid" ]] && ! svc_running; then
        # Left by a crash or a reboot; its pid may now belong to an unrelated process,
        # which would make postgres refuse to start.
        log "removing stale postmaster.pid (pid $(postmaster_pid) is not a running postgres)"
        rm -f "$PG_DATA/postmaster.pid"
    fi
    if ! svc_running; then
        rm -f "$PG_SOCK"/.s.PGSQL.* # stale socket + lock file of a killed server
    fi
    # pg_ctl detaches the postmaster (own session); -W: we do the (bounded) waiting ourselves.
    # shellcheck disable=SC2094 # pg_ctl -l and our redirect append to the same log
    as_pg bash -c "$SIGHTOPS_CLOSEFDS_SH; exec \"\$@\"" closefds "$PGBIN/pg_ctl" start -W -D "$PG_DATA" -l "$PG_LOG" -s \
        -o "-c listen_addresses=$SIGHTOPS_HOST -c port=$PG_PORT -c unix_socket_directories='$sock_opt'" \
        </dev/null >>"$PG_LOG" 2>&1
}

svc_wait_ready() {
    local timeout="$1" deadline pid=""
    deadline="$(deadline_in "$timeout")"
    # postmaster.pid appears almost at once; then the port; then a real login.
    wait_until 10 "" "postmaster.pid" test -s "$PG_DATA/postmaster.pid" || return 1
    pid="$(postmaster_pid)"
    wait_until "$(remaining "$deadline")" "$pid" "postgres accepting connections" \
        "$PGBIN/pg_isready" -q -h "$SIGHTOPS_HOST" -p "$PG_PORT" -t 2 || return 1
    wait_until "$(remaining "$deadline")" "$pid" "login as $PG_USER" pg_query 'SELECT 1' postgres || return 1
    # First start: the application database.
    if [[ "$(pg_query "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" postgres)" != 1 ]]; then
        log "creating database $PG_DB owned by $PG_USER"
        pg_query "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\"" postgres >/dev/null || return 1
    fi
    # pgvector must load (rolled back: leaves the database untouched).
    if ! pg_query "BEGIN; CREATE EXTENSION IF NOT EXISTS vector; SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector; ROLLBACK;" >/dev/null; then
        log "CREATE EXTENSION vector failed"
        return 1
    fi
    printf '%s\n' "$pid" >"$PG_PIDFILE"
}

svc_stop_server() {
    local pid rc=0
    pid="$(postmaster_pid)"
    find_pgbin || true
    if [[ -n "$PGBIN" ]]; then
        as_pg timeout 40 "$PGBIN/pg_ctl" stop -D "$PG_DATA" -m fast -t 30 -s </dev/null >>"$PG_LOG" 2>&1 || rc=$?
    else
        rc=1
    fi
    if [[ "$rc" -ne 0 && -n "$pid" ]] && pid_alive "$pid"; then
        log "pg_ctl stop failed (exit $rc); signalling postmaster $pid"
        kill_pid "$pid" "$SIGHTOPS_STOP_GRACE" || true
    fi
    rm -f "$PG_PIDFILE"
    [[ -z "$pid" ]] || ! pid_alive "$pid"
}

svc_main "$@"
