#!/bin/sh
# Installs Debian's Chromium for the documentation's browser test (tests/docs/test_site.py), which
# Playwright drives; Playwright's own browser download cannot reach its servers from these machines.
# It never fails the install: without a browser that one test skips and says why.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no chromium, and not root with apt-get: the browser test of the docs will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; } \
    || echo "install_browser.sh: apt-get could not install chromium: the browser test of the docs will skip" >&2
exit 0
