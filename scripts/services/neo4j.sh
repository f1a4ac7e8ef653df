#!/usr/bin/env bash
# Neo4j 5 Community for the local stack: the real DBMS from Neo4j's own artifacts on Maven
# Central (org.neo4j:neo4j:$NEO4J_VERSION), run by a tiny launcher (neo4j/SightNeo4j.java)
# through DatabaseManagementServiceBuilder. Bolt only, on 127.0.0.1:$NEO4J_BOLT_PORT, auth ON
# (user neo4j, password $NEO4J_PASSWORD); no HTTP connector.
#   scripts/services/neo4j.sh install|start|stop|status
# Jars + compiled launcher: $SIGHTOPS_CACHE/neo4j-$NEO4J_VERSION/{lib,classes} (shared by
# clones; first install downloads ~128 MB with mvn). Data: $SIGHTOPS_STATE/neo4j
# (Neo4j's own debug.log is in $SIGHTOPS_STATE/neo4j/logs), launcher output
# $SIGHTOPS_STATE/log/neo4j.log, pidfile = process-group leader.
# SIGHTOPS_NEO4J_SVC names another instance with its own data dir, log, pidfile and lock
# (neo4j-scratch.sh: the restore drills' second Neo4j, docs/backups.md).
set -euo pipefail
SVC="${SIGHTOPS_NEO4J_SVC:-neo4j}"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NEO4J_VERSION="5.26.0" # must match neo4j/pom.xml
NEO4J_USER="${NEO4J_USER:-neo4j}"
NEO4J_PASSWORD="${NEO4J_PASSWORD:-sight-local-neo4j}"
NEO4J_PAGECACHE_MB="${NEO4J_PAGECACHE_MB:-64}"
# Heap kept modest (the page cache is NEO4J_PAGECACHE_MB, off-heap).
NEO4J_JAVA_OPTS="${NEO4J_JAVA_OPTS:--Xms128m -Xmx768m -XX:+UseG1GC}"

N4J_SRC_DIR="$SIGHTOPS_SERVICES_DIR/neo4j"
N4J_POM="$N4J_SRC_DIR/pom.xml"
N4J_JAVA_SRC="$N4J_SRC_DIR/SightNeo4j.java"
N4J_CACHE="$SIGHTOPS_CACHE/neo4j-$NEO4J_VERSION"
N4J_LIB="$N4J_CACHE/lib"
N4J_CLASSES="$N4J_CACHE/classes"
N4J_HOME="$SIGHTOPS_STATE/$SVC"
N4J_LOG="$SIGHTOPS_LOG_DIR/$SVC.log"
N4J_INSTALL_LOG="$SIGHTOPS_LOG_DIR/neo4j-install.log"
N4J_PIDFILE="$SIGHTOPS_RUN_DIR/$SVC.pid"
N4J_READY="$SIGHTOPS_RUN_DIR/$SVC.ready"

# Always needed by Neo4j 5 on Java 17 (the same flags its own launcher passes).
N4J_JAVA_REQUIRED=(
    --add-opens=java.base/java.nio=ALL-UNNAMED
    --add-opens=java.base/java.io=ALL-UNNAMED
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens=java.base/java.lang=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Djdk.nio.maxCachedBufferSize=1024
    -XX:+ExitOnOutOfMemoryError
    -XX:-OmitStackTraceInFastThrow
    -Dfile.encoding=UTF-8
)

svc_log() { printf '%s\n' "$N4J_LOG"; }

svc_pid() { read_pidfile "$N4J_PIDFILE"; }

svc_running() {
    local pid
    pid="$(svc_pid)"
    group_is_ours "$pid" SightNeo4j
}

svc_first_start() { [[ ! -d "$N4J_HOME/data/databases/system" ]]; }

have_driver() { [[ -x "$SIGHTOPS_PYTHON" ]] && "$SIGHTOPS_PYTHON" -c 'import neo4j' >/dev/null 2>&1; }

# bolt_check DEADLINE_EPOCH: real Bolt login + RETURN 1, retried until the deadline.
# Exit 0 ok, 1 timeout, 3 authentication rejected (no retry: repeated failures lock the user).
bolt_check() {
    local deadline="$1" secs
    secs="$(remaining "$deadline")"
    NEO4J_PASSWORD="$NEO4J_PASSWORD" timeout "$((secs + 10))" "$SIGHTOPS_PYTHON" - \
        "bolt://$SIGHTOPS_HOST:$NEO4J_BOLT_PORT" "$NEO4J_USER" "$deadline" <<'PY'
import os, sys, time
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError

uri, user, deadline = sys.argv[1], sys.argv[2], float(sys.argv[3])
password = os.environ["NEO4J_PASSWORD"]
last = None
while True:
    try:
        # session.run, not execute_query: the latter retries for up to 30 s on its own.
        with GraphDatabase.driver(uri, auth=(user, password), connection_timeout=3,
                                  connection_acquisition_timeout=5) as driver:
            with driver.session() as session:
                record = session.run("RETURN 1 AS ok").single()
            if record is not None and record["ok"] == 1:
                sys.exit(0)
    except AuthError as e:
        print(f"bolt login rejected for {user}: {e}", file=sys.stderr)
        sys.exit(3)
    except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
        last = e
    if time.time() >= deadline:
        print(f"bolt check failed: {last!r}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
PY
}

svc_healthy() {
    port_open "$SIGHTOPS_HOST" "$NEO4J_BOLT_PORT" || return 1
    if have_driver; then
        bolt_check "$(now)" 2>/dev/null
    else
        port_open "$SIGHTOPS_HOST" "$NEO4J_BOLT_PORT" && [[ -f "$N4J_READY" ]]
    fi
}

sha_of() { cat "$@" | sha256sum | awk '{print $1}'; }

java_major() {
    "$1" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }'
}

install_lib() {
    local want tmp t0 rc=0
    want="$(sha_of "$N4J_POM")"
    if [[ -f "$N4J_LIB/.sightops-stamp" && "$(cat "$N4J_LIB/.sightops-stamp")" == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install -y maven); needed once to fetch Neo4j $NEO4J_VERSION"
    t0="$(now)"
    log "downloading Neo4j $NEO4J_VERSION jars from Maven Central into $N4J_LIB (~128 MB, first run only; output in $N4J_INSTALL_LOG)"
    tmp="$N4J_CACHE/lib.tmp.$$"
    rm -rf "$tmp"
    # shellcheck disable=SC2086 # SIGHTOPS_MAVEN_ARGS is a word list on purpose
    (cd "$N4J_CACHE" && timeout 1500 mvn -B -ntp -Dstyle.color=never -f "$N4J_POM" \
        dependency:copy-dependencies -DoutputDirectory="$tmp" ${SIGHTOPS_MAVEN_ARGS:-} \
        </dev/null >>"$N4J_INSTALL_LOG" 2>&1) || rc=$?
    if [[ "$rc" -ne 0 ]] || ! compgen -G "$tmp/neo4j-kernel-$NEO4J_VERSION.jar" >/dev/null; then
        tail_log "$N4J_INSTALL_LOG" 40
        rm -rf "$tmp"
        die "mvn dependency:copy-dependencies failed (exit $rc)"
    fi
    printf '%s\n' "$want" >"$tmp/.sightops-stamp"
    rm -rf "$N4J_LIB" "$N4J_CLASSES"
    mv "$tmp" "$N4J_LIB"
    log "downloaded $(find "$N4J_LIB" -name '*.jar' | wc -l) jars ($(du -sh "$N4J_LIB" | awk '{print $1}')) in $(elapsed "$t0")s"
    SIGHTOPS_INSTALLED_NOW=1
}

install_classes() {
    local want tmp t0 rc=0
    want="$(sha_of "$N4J_JAVA_SRC" "$N4J_LIB/.sightops-stamp")-$(javac -version 2>&1)"
    if [[ -f "$N4J_CLASSES/.sightops-stamp" && "$(cat "$N4J_CLASSES/.sightops-stamp")" == "$want" ]]; then
        return 0
    fi
    t0="$(now)"
    log "compiling $(basename "$N4J_JAVA_SRC")"
    tmp="$N4J_CACHE/classes.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    timeout 300 javac -nowarn -encoding UTF-8 -cp "$N4J_LIB/*" -d "$tmp" "$N4J_JAVA_SRC" \
        </dev/null >>"$N4J_INSTALL_LOG" 2>&1 || rc=$?
    if [[ "$rc" -ne 0 ]]; then
        tail_log "$N4J_INSTALL_LOG" 30
        rm -rf "$tmp"
        die "javac failed (exit $rc)"
    fi
    printf '%s\n' "$want" >"$tmp/.sightops-stamp"
    rm -rf "$N4J_CLASSES"
    mv "$tmp" "$N4J_CLASSES"
    log "compiled in $(elapsed "$t0")s"
    SIGHTOPS_INSTALLED_NOW=1
}

svc_install() {
    command -v java >/dev/null 2>&1 || die "java not found; Neo4j 5 needs Java 17 or 21 (apt-get install -y openjdk-17-jdk-headless)"
    command -v javac >/dev/null 2>&1 || die "javac not found; install a JDK (apt-get install -y openjdk-17-jdk-headless)"
    local major
    major="$(java_major java)"
    [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] || die "Neo4j $NEO4J_VERSION needs Java 17+, found '$major'"
    mkdir -p "$N4J_CACHE" "$N4J_HOME"
    # The cache is shared by clones on this machine: serialise installers.
    exec 8>"$N4J_CACHE/.install.lock"
    flock -w "$SIGHTOPS_LOCK_TIMEOUT" 8 || die "could not lock $N4J_CACHE/.install.lock"
    install_lib
    install_classes
    exec 8>&-
}

svc_launch() {
    if port_open "$SIGHTOPS_HOST" "$NEO4J_BOLT_PORT"; then
        log "port $NEO4J_BOLT_PORT is already in use by another process"
        return 1
    fi
    rm -f "$N4J_READY"
    printf '==== %s starting Neo4j %s (bolt %s:%s) ====\n' "$(date -Is)" "$NEO4J_VERSION" \
        "$SIGHTOPS_HOST" "$NEO4J_BOLT_PORT" >>"$N4J_LOG"
    local -a opts
    # shellcheck disable=SC2206 # NEO4J_JAVA_OPTS is a word list on purpose
    opts=($NEO4J_JAVA_OPTS "${N4J_JAVA_REQUIRED[@]}")
    # Password via the environment only (never argv, which ps shows).
    NEO4J_PASSWORD="$NEO4J_PASSWORD" launch_group "$N4J_PIDFILE" "$N4J_LOG" \
        java "${opts[@]}" -cp "$N4J_LIB/*:$N4J_CLASSES" SightNeo4j \
        --home "$N4J_HOME" --bolt "$SIGHTOPS_HOST:$NEO4J_BOLT_PORT" \
        --pagecache "$((NEO4J_PAGECACHE_MB * 1024 * 1024))" --ready-file "$N4J_READY"
}

svc_wait_ready() {
    local timeout="$1" deadline pid rc=0
    deadline="$(deadline_in "$timeout")"
    pid="$(svc_pid)"
    # The launcher writes the ready file once the DBMS is up and the password applied.
    wait_until "$(remaining "$deadline")" "$pid" "Neo4j launcher ready file" test -f "$N4J_READY" || return 1
    if have_driver; then
        bolt_check "$deadline" || rc=$?
        if [[ "$rc" -eq 3 ]]; then
            log "Bolt rejected $NEO4J_USER's password; if it was changed by hand, remove $N4J_HOME/.sight-password-sha256 and restart"
        fi
        return "$rc"
    fi
    log "WARNING: no neo4j driver in $SIGHTOPS_PYTHON; readiness = ready file + open Bolt port only"
    wait_for_port "$NEO4J_BOLT_PORT" "$(remaining "$deadline")" "$pid"
}

svc_stop_server() {
    local pid
    pid="$(svc_pid)"
    # TERM runs the launcher's shutdown hook (clean DBMS shutdown); KILL after the grace.
    kill_group "$pid" "$SIGHTOPS_STOP_GRACE" || return 1
    rm -f "$N4J_PIDFILE" "$N4J_READY"
}

svc_main "$@"
