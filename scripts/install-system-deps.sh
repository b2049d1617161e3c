#!/usr/bin/env bash
# Install the system tools TierDB's test suite needs (today: promtool, for the alert-rule tests).
#
# promtool ships in the Debian/Ubuntu package `prometheus`. Installing that package would also
# install and start a Prometheus server (port 9090, which docker-compose.minio.yml uses too), so
# this script does not install it: it downloads the .deb (`apt-get download`, no root needed)
# and extracts only the promtool binary into BIN_DIR. No service is installed or enabled.
#
# Root (or sudo) is needed only when apt has no package lists yet (fresh containers), for
# `apt-get update`. An apt/dpkg run by another process (unattended-upgrades on a fresh VM) is
# waited for, up to $APT_LOCK_TIMEOUT seconds (default 600), instead of failing at once.
#
# Idempotent: does nothing when promtool is on PATH or already in BIN_DIR.
#
# Usage: scripts/install-system-deps.sh [--force] [BIN_DIR]      (BIN_DIR default: .venv/bin)
#   --force   download promtool into BIN_DIR even if another promtool is on PATH
set -euo pipefail

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

FORCE=0
if [ "${1:-}" = "--force" ]; then
    FORCE=1
    shift
fi
BIN_DIR="${1:-.venv/bin}"
APT_LOCK_TIMEOUT="${APT_LOCK_TIMEOUT:-600}"
APT_LOCK_RETRY_SECS="${APT_LOCK_RETRY_SECS:-5}"

if [ -x "$BIN_DIR/promtool" ] && "$BIN_DIR/promtool" --version >/dev/null 2>&1; then
    log "promtool already installed: $BIN_DIR/promtool"
    exit 0
fi
if [ "$FORCE" -eq 0 ] && command -v promtool >/dev/null 2>&1; then
    log "promtool already on PATH: $(command -v promtool)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    log "ERROR: promtool is not installed and apt-get/dpkg-deb are unavailable."
    log "Install promtool by hand: it ships in the Prometheus release tarball"
    log "(https://prometheus.io/download/); put it on PATH or into $BIN_DIR."
    exit 2
fi

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

# apt-get update, waiting for a lock held by another apt/dpkg process. DPkg::Lock::Timeout makes
# apt >= 1.9.11 wait by itself; the retry loop covers older apt and the package-lists lock.
apt_update() {
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        log "ERROR: apt has no usable package lists and updating them needs root: run this script"
        log "as root or with sudo available (or run 'sudo apt-get update' first)."
        exit 1
    fi
    local deadline=$((SECONDS + APT_LOCK_TIMEOUT)) output
    while true; do
        if output=$($SUDO env DEBIAN_FRONTEND=noninteractive \
                apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT" update -q 2>&1); then
            return 0
        fi
        if grep -qiE 'could not get lock|unable to lock|is another process using it' <<<"$output" \
                && [ "$SECONDS" -lt "$deadline" ]; then
            log "apt is locked by another process; waiting (up to ${APT_LOCK_TIMEOUT}s)"
            sleep "$APT_LOCK_RETRY_SECS"
            continue
        fi
        printf '%s\n' "$output" >&2
        log "ERROR: apt-get update failed"
        exit 1
    done
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

download() { (cd "$WORK" && apt-get download -q prometheus >/dev/null 2>&1); }

log "downloading the Debian package 'prometheus' (for promtool only; nothing is installed system-wide)"
if ! download; then
    log "apt-get download failed; updating the package lists"
    apt_update
    if ! download; then
        log "ERROR: 'apt-get download prometheus' failed (no such package in the configured apt sources?)"
        exit 1
    fi
fi

deb="$(ls "$WORK"/prometheus_*.deb)"
dpkg-deb -x "$deb" "$WORK/root"
if [ ! -x "$WORK/root/usr/bin/promtool" ]; then
    log "ERROR: $deb contains no usr/bin/promtool"
    exit 3
fi
mkdir -p "$BIN_DIR"
install -m 0755 "$WORK/root/usr/bin/promtool" "$BIN_DIR/promtool.tmp.$$"
mv -f "$BIN_DIR/promtool.tmp.$$" "$BIN_DIR/promtool"   # atomic: a half-copied binary is never used
log "ok: $BIN_DIR/promtool ($("$BIN_DIR/promtool" --version 2>&1 | head -n1))"
