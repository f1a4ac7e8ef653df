#!/usr/bin/env bash
# Google Cloud Pub/Sub emulator for the local stack:
#   gcloud beta emulators pubsub start --host-port=127.0.0.1:$PUBSUB_PORT --project=$PUBSUB_PROJECT
# started with setsid in its own process group (gcloud's python spawns a java child that would
# otherwise outlive a plain kill); stop kills the whole group.
#   scripts/services/pubsub.sh install|start|stop|status
# Data: $SIGHTOPS_STATE/pubsub, log $SIGHTOPS_STATE/log/pubsub.log,
# pidfile $SIGHTOPS_STATE/run/pubsub.pid (the process-group leader).
# Clients: export PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT
set -euo pipefail
SVC=pubsub
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PUBSUB_PROJECT="${PUBSUB_PROJECT:-sight-local}"
PS_DATA="$SIGHTOPS_STATE/pubsub"
PS_LOG="$SIGHTOPS_LOG_DIR/pubsub.log"
PS_PIDFILE="$SIGHTOPS_RUN_DIR/pubsub.pid"
export CLOUDSDK_CORE_DISABLE_PROMPTS=1

svc_log() { printf '%s\n' "$PS_LOG"; }

svc_pid() { read_pidfile "$PS_PIDFILE"; }

svc_running() {
    local pid
    pid="$(svc_pid)"
    group_is_ours "$pid" pubsub
}

svc_healthy() {
    [[ "$(curl -fsS --max-time 2 "http://$SIGHTOPS_HOST:$PUBSUB_PORT/" 2>/dev/null)" == Ok* ]]
}

svc_first_start() { [[ ! -f "$PS_DATA/env.yaml" ]]; }

sdk_root() {
    local g
    g="$(command -v gcloud 2>/dev/null)" || return 1
    g="$(readlink -f "$g")"
    dirname "$(dirname "$g")"
}

emulator_installed() {
    local root
    root="$(sdk_root)" || return 1
    [[ -x "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ]]
}

svc_install() {
    command -v gcloud >/dev/null 2>&1 || die "gcloud not found; install the Google Cloud CLI (google-cloud-cli) with the pubsub-emulator component"
    command -v java >/dev/null 2>&1 || die "java not found; the Pub/Sub emulator needs a JRE (apt-get install -y openjdk-17-jre-headless)"
    command -v curl >/dev/null 2>&1 || apt_install curl
    if ! emulator_installed; then
        local t0 root rc=0
        t0="$(now)"
        root="$(sdk_root)"
        if [[ "$root" == /usr/lib/google-cloud-sdk ]]; then
            # apt-managed SDK: components come as Debian packages.
            log "installing the Pub/Sub emulator (apt google-cloud-cli-pubsub-emulator)"
            apt_install google-cloud-cli-pubsub-emulator
        else
            log "installing the Pub/Sub emulator (gcloud components install)"
            timeout 900 gcloud components install pubsub-emulator beta --quiet \
                </dev/null >>"$SIGHTOPS_LOG_DIR/pubsub-install.log" 2>&1 || rc=$?
            [[ "$rc" -eq 0 ]] || {
                tail_log "$SIGHTOPS_LOG_DIR/pubsub-install.log" 30
                die "gcloud components install pubsub-emulator failed (exit $rc)"
            }
        fi
        emulator_installed || die "Pub/Sub emulator still missing under $root/platform/pubsub-emulator"
        log "emulator installed in $(elapsed "$t0")s"
        SIGHTOPS_INSTALLED_NOW=1
    fi
    mkdir -p "$PS_DATA"
}

svc_launch() {
    if port_open "$SIGHTOPS_HOST" "$PUBSUB_PORT"; then
        log "port $PUBSUB_PORT is already in use by another process"
        return 1
    fi
    mkdir -p "$PS_DATA"
    printf '==== %s starting Pub/Sub emulator (%s:%s, project %s) ====\n' "$(date -Is)" \
        "$SIGHTOPS_HOST" "$PUBSUB_PORT" "$PUBSUB_PROJECT" >>"$PS_LOG"
    launch_group "$PS_PIDFILE" "$PS_LOG" \
        gcloud beta emulators pubsub start --quiet \
        --host-port="$SIGHTOPS_HOST:$PUBSUB_PORT" --project="$PUBSUB_PROJECT" --data-dir="$PS_DATA"
}

svc_wait_ready() {
    local pid
    pid="$(svc_pid)"
    wait_until "$1" "$pid" "GET http://$SIGHTOPS_HOST:$PUBSUB_PORT/ -> Ok" svc_healthy
}

# Emulator JVMs serving our port that escaped the group (should not happen; belt and braces).
stray_emulators() {
    pgrep -f -- "cloud-pubsub-emulator.*--port=$PUBSUB_PORT( |\$)" || true
}

svc_stop_server() {
    local pid stray
    pid="$(svc_pid)"
    kill_group "$pid" "$SIGHTOPS_STOP_GRACE" || return 1
    for stray in $(stray_emulators); do
        log "killing stray emulator process $stray"
        kill_pid "$stray" 5 || true
    done
    rm -f "$PS_PIDFILE"
}

svc_main "$@"
