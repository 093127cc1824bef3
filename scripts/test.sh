#!/usr/bin/env bash
# The project's test command (README and .ci/run both call exactly this): installs the test Lean
# and fixture library, then runs the whole test suite against them. Any missing piece fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install-test-toolchain.sh
cargo test --locked "$@"
