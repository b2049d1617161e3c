#!/usr/bin/env bash
# Install the system tools TierDB's test suite needs (today: promtool, for the alert-rule tests).
#
# Idempotent: does nothing when promtool is already on PATH. Meant for Debian/Ubuntu where
# promtool ships in the `prometheus` package. Safe in containers without systemd: service
# starts by the package's maintainer scripts are denied through a temporary policy-rc.d.
#
# Usage: scripts/install-system-deps.sh        (run as root, or with sudo available)
set -euo pipefail

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

if command -v promtool >/dev/null 2>&1; then
    log "promtool already installed: $(promtool --version 2>&1 | head -n1)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        log "ERROR: need root (or sudo) to install the Debian package 'prometheus' (provides promtool)."
        exit 1
    fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "ERROR: promtool is not on PATH and apt-get is unavailable."
    log "Install promtool by hand: it ships with Prometheus (Debian/Ubuntu package 'prometheus',"
    log "or the official release tarball from https://prometheus.io/download/), then put it on PATH."
    log "Neither PyPI nor npm carries an official promtool build, so there is no fallback here."
    exit 2
fi

# Deny service starts from maintainer scripts (no init system in containers; a start attempt
# could fail or hang the postinst). Any existing policy-rc.d is set aside and restored afterwards.
POLICY=/usr/sbin/policy-rc.d
BACKUP="$POLICY.tierdb-backup.$$"
had_policy=0
restore_policy() {
    if [ "$had_policy" -eq 1 ]; then
        $SUDO mv -f "$BACKUP" "$POLICY"
    else
        $SUDO rm -f "$POLICY"
    fi
}
if [ -e "$POLICY" ]; then
    $SUDO cp -p "$POLICY" "$BACKUP"
    had_policy=1
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# temporary, from tierdb scripts/install-system-deps.sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
$SUDO chmod 0755 "$POLICY"

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
log "apt-get install prometheus (provides promtool)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    prometheus

if ! command -v promtool >/dev/null 2>&1; then
    log "ERROR: the 'prometheus' package installed but promtool is still not on PATH."
    exit 3
fi
log "ok: $(promtool --version 2>&1 | head -n1)"
