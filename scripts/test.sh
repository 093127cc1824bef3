#!/usr/bin/env bash
# The project's test command (README and .ci/run both call exactly this): installs the test Lean,
# its fixture library, the test model, the reference tokenizer vocabularies, the numpy reference
# decoder's Python packages and headless Chromium (for the HTML report), then runs the whole test
# suite against them. Any missing piece fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install-test-toolchain.sh
bash scripts/install-test-model.sh
bash scripts/install-test-vocab.sh
bash scripts/install-test-reference.sh
bash scripts/install-test-browser.sh
cargo test --locked "$@"
