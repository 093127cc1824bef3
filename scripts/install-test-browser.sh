#!/usr/bin/env bash
# Makes headless Chromium available for the HTML report's browser tests (tests/report_html.rs),
# idempotently: uses $SUBGOAL_CHROMIUM or `chromium` on PATH when present, else installs Debian's
# `chromium` package with apt-get (as root, or through sudo). Fails loudly (non-zero, with the
# reason) when it can do neither: the browser tests never skip.
set -euo pipefail

die() { echo "install-test-browser: $*" >&2; exit 1; }
say() { echo "install-test-browser: $*" >&2; }

found() {
    if [[ -n "${SUBGOAL_CHROMIUM:-}" ]]; then
        [[ -x "$SUBGOAL_CHROMIUM" ]] || die "SUBGOAL_CHROMIUM=$SUBGOAL_CHROMIUM is not an executable"
        echo "$SUBGOAL_CHROMIUM"
        return 0
    fi
    command -v chromium || command -v chromium-browser || return 1
}

if ! path="$(found)"; then
    command -v apt-get >/dev/null || die "no chromium on PATH and no apt-get to install it; install Chromium and set SUBGOAL_CHROMIUM"
    if [[ "$(id -u)" -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        die "no chromium on PATH, and installing Debian's package needs root (run: sudo apt-get install chromium)"
    fi
    say "installing Debian's chromium package"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq || die "apt-get update failed"
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null || die "apt-get install chromium failed"
    path="$(found)" || die "chromium installed but not on PATH"
fi
version="$("$path" --version 2>/dev/null | head -1)" || die "$path --version failed"
say "ready: $path ($version)"
