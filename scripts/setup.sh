#!/usr/bin/env bash
# Installs what Sluice needs to build its rules and run its tests: the wasm32 toolchain, and the
# brokers the integration tests run against. Idempotent: a second run only checks. Used by
# scripts/demo.sh, scripts/test.sh and .ci/run.
#
# The wasm32 toolchain, in order of preference:
#   1. rustup's own target:   rustup target add wasm32-unknown-unknown   (a normal machine)
#   2. Debian's packages:     rustc-web rust-web-src lld-19, which build std for wasm32 from
#                             source (-Zbuild-std); for machines whose rustup cannot download.
# `sluice rules build` picks whichever is present (SLUICE_WASM_TOOLCHAIN=rustup|debian forces one).
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        log "need root for: $*"; return 1
    fi
}

apt_updated=0
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        log "please install: ${missing[*]} (no apt-get here)"; return 1
    fi
    if [ $apt_updated -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

wasm_toolchain() {
    if [ "${SLUICE_WASM_TOOLCHAIN:-}" != "debian" ] && command -v rustup >/dev/null 2>&1; then
        if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
            log "wasm32: rustup target present"; return 0
        fi
        if timeout 300 rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
            log "wasm32: rustup target added"; return 0
        fi
        log "wasm32: rustup cannot add the target here; falling back to Debian's rustc-web"
    fi
    apt_install rustc-web rust-web-src lld-19
    log "wasm32: Debian rustc-web + rust-web-src + lld-19 (build-std)"
}

# The brokers the integration tests start on loopback ports (testkit/src/brokers.rs),
# openssl for the certificates of the TLS test, and what builds the token plugin. Debian's mosquitto lives in /usr/sbin, which is not
# on an ordinary user's PATH.
brokers() {
    if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
        log "mosquitto: present"
    else
        apt_install mosquitto
        log "mosquitto: installed"
    fi
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    # The headers and a C compiler for Sluice's mosquitto plugin (examples/deploy/mosquitto),
    # which the ThingsBoard-device tests build and load.
    apt_install mosquitto-dev libmosquitto-dev
    command -v cc >/dev/null 2>&1 || apt_install gcc
}

# The browser the web view's test drives: Debian's headless Chromium and its WebDriver
# (tests/e2e/web.rs starts chromedriver on a loopback port).
browser() {
    if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
        log "chromium + chromedriver: present"
    else
        apt_install chromium chromium-driver
        log "chromium + chromedriver: installed"
    fi
}

# The Kafka-protocol broker the tests start (no Kafka distribution is needed): tansu, built once
# from crates.io into a cache that survives between runs (~9 minutes on 2 cores the first time).
TANSU_ROOT="${SLUICE_TANSU_ROOT:-$HOME/.cache/sluice/tansu}"
tansu_broker() {
    if [ -x "$TANSU_ROOT/bin/tansu" ]; then log "tansu: $TANSU_ROOT/bin/tansu"; return 0; fi
    if command -v tansu >/dev/null 2>&1; then log "tansu: $(command -v tansu)"; return 0; fi
    log "tansu: building it (cargo install tansu --locked --features dynostore; once, cached in $TANSU_ROOT)"
    cargo install tansu --locked --features dynostore --root "$TANSU_ROOT" --quiet
}

wasm_toolchain
if [ "${1:-}" = "--test-brokers" ]; then
    brokers
    browser
    tansu_broker
fi
log "ready"
