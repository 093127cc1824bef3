#!/usr/bin/env bash
# Sets up real proving on a user's machine: elan (the Lean toolchain manager), the toolchain that
# lean/lean-toolchain pins, Mathlib's prebuilt cache for lean/, and a check with `subgoal doctor`.
# Needs network access to the Lean release servers and Mathlib's cache; says so plainly when
# they cannot be reached. Safe to run again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJECT="${1:-$ROOT/lean}"
die() { echo "setup: $*" >&2; exit 1; }

export PATH="${ELAN_HOME:-$HOME/.elan}/bin:$PATH"
if ! command -v elan >/dev/null; then
    command -v curl >/dev/null || die "curl is required to install elan"
    echo "setup: installing elan"
    curl -sSfL https://raw.githubusercontent.com/leanprover/elan/master/elan-init.sh -o /tmp/elan-init.sh \
        || die "cannot reach the elan installer (no network?). Install elan by hand, then rerun."
    sh /tmp/elan-init.sh -y --default-toolchain none || die "elan installation failed"
fi
cd "$PROJECT"
echo "setup: fetching the toolchain $(cat lean-toolchain) and Mathlib (first run downloads several GB)"
lake update >/dev/null 2>&1 || lake resolve-deps || die "lake could not fetch Mathlib (no network?)"
lake exe cache get || die "could not download Mathlib's prebuilt cache (no network?)"
lake build || die "lake build failed in $PROJECT"
cd "$ROOT"
cargo run --release -- doctor --lean-project "$PROJECT"
