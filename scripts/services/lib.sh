# shellcheck shell=bash
# Shared helpers for scripts/services/*.sh (sourced, not executed).
#
# Layout (all under $SIGHTOPS_STATE, default <repo>/.local, gitignored):
#   log/<svc>.log   service output         run/<svc>.pid   pid (or process-group leader)
#   run/<svc>.lock  serialises start/stop   <svc data dirs> pg/, redis/, neo4j/, pubsub/
# Downloads that survive a fresh clone live in $SIGHTOPS_CACHE (~/.cache/sight-ops).
#
# A service script defines these functions and then calls `svc_main "$@"`:
#   svc_install        idempotent; returns 0 when everything needed is present
#   svc_launch         starts the server in the background, returns at once
#   svc_wait_ready T   waits at most T seconds for real readiness (0 = ready)
#   svc_healthy        one quick health probe (0 = healthy)
#   svc_running        0 when our process for this service exists
#   svc_pid            prints the pid (or group leader) of our process, if any
#   svc_stop_server    stops our process (bounded), returns 0 when it is gone
#   svc_first_start    0 when the data dir has never been initialised (longer timeout)
#   svc_log            path of the service log

SIGHTOPS_SERVICES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SIGHTOPS_REPO="$(cd "$SIGHTOPS_SERVICES_DIR/../.." && pwd)"

_sightops_abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac; }

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
SIGHTOPS_STATE="$(_sightops_abs "${SIGHTOPS_STATE:-$SIGHTOPS_REPO/.local}")"
SIGHTOPS_CACHE="$(_sightops_abs "${SIGHTOPS_CACHE:-$HOME/.cache/sight-ops}")"
SIGHTOPS_LOG_DIR="$SIGHTOPS_STATE/log"
SIGHTOPS_RUN_DIR="$SIGHTOPS_STATE/run"
SIGHTOPS_PYTHON="${SIGHTOPS_PYTHON:-$SIGHTOPS_REPO/.venv/bin/python}"
export SIGHTOPS_STATE SIGHTOPS_CACHE

# Ports (loopback only) and local-only credentials; defaults match shared/settings.py.
PG_PORT="${PG_PORT:-54329}"
REDIS_PORT="${REDIS_PORT:-63799}"
NEO4J_BOLT_PORT="${NEO4J_BOLT_PORT:-7688}"
NEO4J_HTTP_PORT="${NEO4J_HTTP_PORT:-7475}" # reserved; the embedded server runs no HTTP connector
PUBSUB_PORT="${PUBSUB_PORT:-8681}"
SIGHTOPS_HOST=127.0.0.1

# shellcheck disable=SC2034 # used by up.sh / down.sh
SIGHTOPS_ALL_SERVICES=(postgres redis neo4j pubsub)
# Started only when named (`up.sh neo4j-scratch`); `down.sh` without names stops them too.
# shellcheck disable=SC2034 # used by down.sh
SIGHTOPS_ON_DEMAND_SERVICES=(neo4j-scratch)

# Timeouts (seconds). Readiness is timed from the moment the server is launched; installs
# (downloads) have their own, longer bounds.
SIGHTOPS_READY_TIMEOUT="${SIGHTOPS_READY_TIMEOUT:-60}"
SIGHTOPS_FIRST_READY_TIMEOUT="${SIGHTOPS_FIRST_READY_TIMEOUT:-120}"
SIGHTOPS_STOP_GRACE="${SIGHTOPS_STOP_GRACE:-20}"
SIGHTOPS_LOCK_TIMEOUT="${SIGHTOPS_LOCK_TIMEOUT:-900}"

export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------- logging
_sightops_t0="${EPOCHREALTIME:-$(date +%s.%N)}"
SVC="${SVC:-services}"

now() { printf '%s\n' "${EPOCHREALTIME:-$(date +%s.%N)}"; }

# elapsed T0 -> seconds since T0 with one decimal
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

log() { printf '[%s +%ss] %s: %s\n' "$(date +%H:%M:%S)" "$(elapsed "$_sightops_t0")" "$SVC" "$*" >&2; }

die() {
    log "ERROR: $*"
    exit 1
}

# tail_log FILE [N]: show the end of a log on stderr (used on failures)
tail_log() {
    local f="$1" n="${2:-40}"
    if [[ -s "$f" ]]; then
        printf -- '----- last %s lines of %s -----\n' "$n" "$f" >&2
        tail -n "$n" "$f" >&2 || true
        printf -- '----- end of %s -----\n' "$f" >&2
    else
        printf -- '(log %s is empty or missing)\n' "$f" >&2
    fi
}

ensure_state_dirs() {
    mkdir -p "$SIGHTOPS_STATE" "$SIGHTOPS_LOG_DIR" "$SIGHTOPS_RUN_DIR"
}

# ---------------------------------------------------------------------------- processes
# Zombies count as dead: a detached daemon is reparented to whatever subreaper the caller
# runs under (CI runners, container inits), which may reap it late.
pid_alive() {
    [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
    local stat=""
    stat="$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null | awk '{print $1}')" || true
    [[ "$stat" != Z && "$stat" != X ]]
}

# group_alive PGID: some non-zombie process is in process group PGID
group_alive() {
    [[ -n "${1:-}" ]] && kill -0 -- "-$1" 2>/dev/null || return 1
    ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^[ZX]/ { found = 1 } END { exit !found }'
}

# group_is_ours PGID WORD: process group PGID is alive and its leader (if still alive) has
# WORD in its command line. (A pid cannot be reused while it is still some group's id, so a
# live group whose leader has exited is still ours.)
group_is_ours() {
    [[ -n "${1:-}" ]] && group_alive "$1" || return 1
    if pid_alive "$1"; then
        pid_cmdline_has "$1" "$2"
    fi
}

# read_pidfile FILE -> pid on stdout (empty if missing/garbage)
read_pidfile() {
    local f="$1" pid=""
    [[ -r "$f" ]] && read -r pid <"$f" || true
    [[ "$pid" =~ ^[0-9]+$ ]] && printf '%s\n' "$pid"
    return 0
}

# pid_cmdline_has PID WORD: the process's command line contains WORD (guards against pid reuse)
pid_cmdline_has() {
    local pid="$1" word="$2"
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$word"
}

# kill_group PGID [GRACE]: TERM the whole process group, KILL it after GRACE seconds.
kill_group() {
    local pgid="$1" grace="${2:-$SIGHTOPS_STOP_GRACE}" t0
    group_alive "$pgid" || return 0
    t0="$(now)"
    kill -TERM -- "-$pgid" 2>/dev/null || true
    if ! wait_gone_group "$pgid" "$grace"; then
        log "process group $pgid still alive after ${grace}s; sending KILL"
        kill -KILL -- "-$pgid" 2>/dev/null || true
        wait_gone_group "$pgid" 5 || return 1
    fi
    log "process group $pgid stopped in $(elapsed "$t0")s"
}

# kill_pid PID [GRACE]: TERM one process, KILL it after GRACE seconds.
kill_pid() {
    local pid="$1" grace="${2:-$SIGHTOPS_STOP_GRACE}"
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone_pid "$pid" "$grace"; then
        log "pid $pid still alive after ${grace}s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone_pid "$pid" 5 || return 1
    fi
}

wait_gone_pid() { # PID TIMEOUT
    local deadline
    deadline=$(awk -v t="$(now)" -v d="$2" 'BEGIN { printf "%.3f", t + d }')
    while pid_alive "$1"; do
        _past "$deadline" && return 1
        sleep 0.1
    done
}

wait_gone_group() { # PGID TIMEOUT
    local deadline
    deadline=$(awk -v t="$(now)" -v d="$2" 'BEGIN { printf "%.3f", t + d }')
    while group_alive "$1"; do
        _past "$deadline" && return 1
        sleep 0.1
    done
}

_past() { awk -v d="$1" -v t="$(now)" 'BEGIN { exit !(t >= d) }'; }

# Daemons must not inherit our descriptors: the start lock (fd 9) would stay held for the
# daemon's lifetime, and an inherited CI pipe keeps the CI step from finishing.
# (No redirections in the loop: bash would park a copy of fd 2 on a high fd and we would close it.)
# shellcheck disable=SC2016 # expanded by the child shell
SIGHTOPS_CLOSEFDS_SH='for f in /proc/$$/fd/*; do f=${f##*/}; case $f in 0 | 1 | 2 | *[!0-9]*) ;; *) eval "exec $f>&-" ;; esac; done'

# closefds_exec CMD...: exec CMD with only stdin/stdout/stderr open.
closefds_exec() { bash -c "$SIGHTOPS_CLOSEFDS_SH; exec \"\$@\"" closefds "$@"; }

# launch_group PIDFILE LOGFILE CMD...: run CMD detached in a new session/process group whose
# leader's pid (== pgid) is written to PIDFILE before CMD is exec'ed. stdin is /dev/null.
launch_group() {
    local pidfile="$1" logfile="$2"
    shift 2
    rm -f "$pidfile"
    setsid bash -c "echo \$\$ >\"\$0\"; $SIGHTOPS_CLOSEFDS_SH; exec \"\$@\"" "$pidfile" "$@" \
        </dev/null >>"$logfile" 2>&1 &
    # setsid may fork; wait (bounded) until the leader has written its pid.
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s "$pidfile" ]] && return 0
        sleep 0.1
    done
    die "launcher did not write $pidfile"
}

# ---------------------------------------------------------------------------- waiting
port_open() { # HOST PORT
    # shellcheck disable=SC2016 # expanded by the child shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# wait_until TIMEOUT WATCH_PID DESC CMD...: poll CMD every 0.25 s until it succeeds.
# Fails early when WATCH_PID (if non-empty) dies. Returns 1 on timeout, 2 on early death.
wait_until() {
    local timeout="$1" watch="$2" desc="$3" deadline
    shift 3
    deadline=$(awk -v t="$(now)" -v d="$timeout" 'BEGIN { printf "%.3f", t + d }')
    while true; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if [[ -n "$watch" ]] && ! pid_alive "$watch"; then
            log "process $watch exited while waiting for: $desc"
            return 2
        fi
        if _past "$deadline"; then
            log "timed out after ${timeout}s waiting for: $desc"
            return 1
        fi
        sleep 0.25
    done
}

wait_for_port() { # PORT TIMEOUT [WATCH_PID]
    wait_until "$2" "${3:-}" "port $SIGHTOPS_HOST:$1" port_open "$SIGHTOPS_HOST" "$1"
}

# remaining DEADLINE -> whole seconds left (min 1)
remaining() { awk -v d="$1" -v t="$(now)" 'BEGIN { r = int(d - t); if (r < 1) r = 1; print r }'; }

deadline_in() { awk -v t="$(now)" -v d="$1" 'BEGIN { printf "%.3f", t + d }'; }

# ---------------------------------------------------------------------------- locking
# take_lock NAME: serialise start/stop of one service across concurrent invocations.
take_lock() {
    ensure_state_dirs
    exec 9>"$SIGHTOPS_RUN_DIR/$1.lock"
    if ! flock -w "$SIGHTOPS_LOCK_TIMEOUT" 9; then
        die "could not lock $SIGHTOPS_RUN_DIR/$1.lock within ${SIGHTOPS_LOCK_TIMEOUT}s"
    fi
}

# ---------------------------------------------------------------------------- apt
# apt_install PKG...: install Debian packages as root without starting their services.
_sightops_apt_updated=0
apt_install() {
    [[ "$(id -u)" -eq 0 ]] || die "need root to apt-get install $*; run: sudo apt-get install -y $*"
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    local added_policy=0 rc=0
    # Keep postinst scripts from starting system-wide daemons (e.g. redis on 6379).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    local alog="$SIGHTOPS_LOG_DIR/$SVC-install.log"
    if [[ "$_sightops_apt_updated" -eq 0 ]]; then
        log "apt-get update (output in $alog)"
        timeout 600 apt-get update -q </dev/null >>"$alog" 2>&1 || rc=$?
        _sightops_apt_updated=1
    fi
    if [[ "$rc" -eq 0 ]]; then
        log "apt-get install -y $*"
        timeout 900 apt-get install -y -q --no-install-recommends "$@" </dev/null >>"$alog" 2>&1 || rc=$?
    fi
    if [[ "$added_policy" -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    if [[ "$rc" -ne 0 ]]; then
        tail_log "$alog" 30
        die "apt-get install $* failed (exit $rc)"
    fi
}

# ---------------------------------------------------------------------------- main
svc_usage() {
    cat >&2 <<EOF
usage: $(basename "$0") install|start|stop|status
  install  idempotently install what $SVC needs (start does this automatically)
  start    start $SVC unless it is already running and healthy; wait for readiness
  stop     stop $SVC (no-op when stopped)
  status   exit 0 running+healthy, 1 running but unhealthy, 3 stopped
env: SIGHTOPS_STATE=$SIGHTOPS_STATE SIGHTOPS_CACHE=$SIGHTOPS_CACHE
EOF
}

# When SIGHTOPS_START_RESULT names a file, `start` writes "started" or "running" to it
# (up.sh uses this to record which services it started).
_svc_result() {
    [[ -n "${SIGHTOPS_START_RESULT:-}" ]] && printf '%s\n' "$1" >"$SIGHTOPS_START_RESULT"
    return 0
}

svc_do_start() {
    local t0 t_launch timeout first=0 rc=0 installed_now=0
    t0="$(now)"
    ensure_state_dirs
    take_lock "$SVC"

    local running=0 healthy=0
    if svc_running; then running=1; fi
    if svc_healthy; then healthy=1; fi
    if [[ "$running" -eq 1 && "$healthy" -eq 1 ]]; then
        log "already running and healthy (pid $(svc_pid))"
        printf '%s: already running (pid %s)\n' "$SVC" "$(svc_pid)"
        _svc_result running
        return 0
    fi
    if [[ "$running" -eq 0 && "$healthy" -eq 1 ]]; then
        # Something else (e.g. docker-compose) already serves this port healthily.
        log "a healthy $SVC not started by these scripts is already answering; leaving it alone"
        printf '%s: already running (not managed by scripts/services)\n' "$SVC"
        _svc_result running
        return 0
    fi

    local t_inst
    t_inst="$(now)"
    SIGHTOPS_INSTALLED_NOW=0
    svc_install
    installed_now="$SIGHTOPS_INSTALLED_NOW"
    local install_s
    install_s="$(elapsed "$t_inst")"

    if [[ "$running" -eq 1 ]] && svc_running; then
        # Our process exists but is not healthy (still starting, or wedged): give it the
        # normal readiness window before declaring failure.
        log "process $(svc_pid) exists but is not healthy yet; waiting"
        t_launch="$(now)"
        if svc_wait_ready "$SIGHTOPS_READY_TIMEOUT"; then
            printf '%s: ready in %ss (already starting, pid %s)\n' "$SVC" "$(elapsed "$t_launch")" "$(svc_pid)"
            _svc_result running
            return 0
        fi
        log "not ready; restarting it"
        svc_stop_server || true
    fi

    if svc_first_start || [[ "$installed_now" -eq 1 ]]; then
        first=1
    fi
    timeout="$SIGHTOPS_READY_TIMEOUT"
    [[ "$first" -eq 1 ]] && timeout="$SIGHTOPS_FIRST_READY_TIMEOUT"

    log "starting (ready timeout ${timeout}s)"
    t_launch="$(now)"
    local launched=0
    svc_launch || rc=$?
    if [[ "$rc" -eq 0 ]]; then
        launched=1
        svc_wait_ready "$timeout" || rc=$?
    fi
    if [[ "$rc" -ne 0 ]]; then
        if [[ "$launched" -eq 1 ]]; then
            log "FAILED: not ready within ${timeout}s (exit $rc)"
        else
            log "FAILED to launch (exit $rc)"
        fi
        tail_log "$(svc_log)" 40
        if [[ "$launched" -eq 1 ]]; then
            log "stopping the failed $SVC process"
            svc_stop_server >/dev/null 2>&1 || true
        fi
        # Not launched (e.g. the port is taken): nothing of ours runs, and a stale pidfile's
        # pid, or whatever holds the port, is not ours to kill.
        return 1
    fi
    local ready_s
    ready_s="$(elapsed "$t_launch")"
    log "ready in ${ready_s}s (install/check ${install_s}s, total $(elapsed "$t0")s)"
    if [[ "$installed_now" -eq 1 ]]; then
        printf '%s: ready in %ss (pid %s; first install took %ss)\n' "$SVC" "$ready_s" "$(svc_pid)" "$install_s"
    else
        printf '%s: ready in %ss (pid %s)\n' "$SVC" "$ready_s" "$(svc_pid)"
    fi
    _svc_result started
}

svc_do_stop() {
    ensure_state_dirs
    take_lock "$SVC"
    if ! svc_running; then
        log "not running"
        printf '%s: stopped\n' "$SVC"
        return 0
    fi
    local t0
    t0="$(now)"
    log "stopping (pid $(svc_pid))"
    if ! svc_stop_server; then
        die "could not stop $SVC"
    fi
    printf '%s: stopped in %ss\n' "$SVC" "$(elapsed "$t0")"
}

svc_do_status() {
    ensure_state_dirs
    if svc_running; then
        if svc_healthy; then
            printf '%s: running (pid %s), healthy\n' "$SVC" "$(svc_pid)"
            return 0
        fi
        printf '%s: running (pid %s), NOT healthy; see %s\n' "$SVC" "$(svc_pid)" "$(svc_log)"
        return 1
    fi
    if svc_healthy; then
        printf '%s: stopped (but something else answers on its port)\n' "$SVC"
    else
        printf '%s: stopped\n' "$SVC"
    fi
    return 3
}

svc_main() {
    local cmd="${1:-}"
    case "$cmd" in
    install)
        ensure_state_dirs
        take_lock "$SVC"
        local t0
        t0="$(now)"
        SIGHTOPS_INSTALLED_NOW=0
        svc_install
        printf '%s: installed (%ss)\n' "$SVC" "$(elapsed "$t0")"
        ;;
    start) svc_do_start ;;
    stop) svc_do_stop ;;
    status) svc_do_status ;;
    -h | --help | help) svc_usage ;;
    *)
        svc_usage
        exit 2
        ;;
    esac
}

# parse_stack_args LAST_USAGE_LINE ARGS...: the command line of up.sh / down.sh.
# Sets `record` (absolute path or empty) and `services` (the names given). Usage text is
# lines 2..LAST_USAGE_LINE of the calling script's header comment.
parse_stack_args() {
    local last="$1"
    shift
    _stack_usage() {
        sed -n "2,${last}s/^# \{0,1\}//p" "$0" >&2
        exit "${1:-2}"
    }
    record=""
    services=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --record)
            [[ $# -ge 2 ]] || _stack_usage
            record="$(_sightops_abs "$2")"
            shift 2
            ;;
        --record=*)
            record="$(_sightops_abs "${1#--record=}")"
            shift
            ;;
        -h | --help) _stack_usage 0 ;;
        postgres | redis | neo4j | pubsub | neo4j-scratch)
            services+=("$1")
            shift
            ;;
        *)
            echo "$(basename "$0"): unknown service or option: $1" >&2
            _stack_usage
            ;;
        esac
    done
}

# run_each ACTION SVC...: `<svc>.sh ACTION` for each distinct service, in parallel.
# Sets `ordered` (distinct names in order), `rcs[svc]` (exit codes) and `work`, a temp dir
# (removed on exit) holding each service's one-line summary in <svc>.out and, for start,
# whether it was started or already running in <svc>.result.
run_each() {
    local action="$1" s rc
    shift
    work="$(mktemp -d "${TMPDIR:-/tmp}/sightops-$action.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    declare -gA rcs=()
    local -A pids=() seen=()
    ordered=()
    for s in "$@"; do
        [[ -n "${seen[$s]:-}" ]] && continue
        seen[$s]=1
        ordered+=("$s")
        # stdout (the summary) is collected; progress and errors go straight to stderr.
        SIGHTOPS_START_RESULT="$work/$s.result" "$SIGHTOPS_SERVICES_DIR/$s.sh" "$action" \
            </dev/null >"$work/$s.out" &
        pids[$s]=$!
    done
    for s in "${ordered[@]}"; do
        rc=0
        wait "${pids[$s]}" || rc=$?
        rcs[$s]=$rc
    done
}
