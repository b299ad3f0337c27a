#!/usr/bin/env bash
# Install Debian's chromium (+ driver) for the Playwright browser test.
# Idempotent: does nothing when /usr/bin/chromium already exists, so the
# Makefile's test target can call it on every run without network access.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_chromium.sh: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y chromium chromium-driver; then
    # Package lists may be missing or stale (fresh container): refresh once and retry.
    $SUDO apt-get update
    $SUDO apt-get install -y chromium chromium-driver
fi
/usr/bin/chromium --version
