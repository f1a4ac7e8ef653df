#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the console's browser tests
# (tests/console/test_browser.py, docs/console.md "Browser tests"). Idempotent: nothing
# happens when /usr/bin/chromium is already there. Playwright drives this system browser
# through its executable path; `playwright install` (a browser download of its own) is
# never used. Needs root, as the test machines run (apt-get).
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "browser.sh: /usr/bin/chromium is missing; run as root: apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine's package lists may be empty or old: refresh them once.
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
