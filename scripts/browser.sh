#!/usr/bin/env bash
# Idempotent: Debian's Chromium and ChromeDriver for the browser stage (tests/browser), which
# loads the dashboard and the ledger explorer in a real headless browser. Needs root to install.
set -euo pipefail
say() { echo "browser: $*" >&2; }
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    say "chromium and chromedriver are missing and installing them needs root:"
    say "  apt-get install chromium chromium-driver fonts-dejavu-core"
    exit 1
fi
say "installing chromium and chromium-driver with apt-get"
t=$SECONDS
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Fonts, so the screenshots show text rather than boxes; no other recommends.
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
say "installed in $((SECONDS - t)) s"
