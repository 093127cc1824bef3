#!/usr/bin/env bash
# Installs the Python reference the decoder is checked against (tests/reference.rs runs
# tests/reference/llama_forward.py): a virtual environment in .toolchain/pyref of this checkout
# (git-ignored) with llama.cpp's `gguf` package and numpy, at pinned versions, from PyPI.
# Idempotent; fails loudly (non-zero, with the reason) when any step cannot be done.
# Override the location with SUBGOAL_TOOLCHAIN_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SUBGOAL_TOOLCHAIN_DIR:-$ROOT/.toolchain}/pyref"
PINS=(gguf==0.17.1 numpy==2.2.6 pyyaml==6.0.2 tqdm==4.67.1)

die() { echo "install-test-reference: $*" >&2; exit 1; }
say() { echo "install-test-reference: $*" >&2; }

command -v python3 >/dev/null || die "python3 is required"
if [[ "$(cat "$DIR/.pins" 2>/dev/null)" == "${PINS[*]}" ]] && "$DIR/bin/python" -c "import gguf, numpy" 2>/dev/null; then
    exit 0
fi
say "creating $DIR with ${PINS[*]}"
rm -rf "$DIR"
if python3 -m venv "$DIR" 2>/dev/null; then
    "$DIR/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}" || die "pip could not install ${PINS[*]}"
else
    # No venv module (Debian without python3-venv): packages into a directory, and a python
    # that finds them.
    rm -rf "$DIR"
    python3 -m pip install --quiet --disable-pip-version-check --target "$DIR/site" "${PINS[@]}" \
        || die "pip could not install ${PINS[*]} (and python3 has no venv module)"
    mkdir -p "$DIR/bin"
    printf '#!/bin/sh\nPYTHONPATH="%s/site${PYTHONPATH:+:$PYTHONPATH}" exec python3 "$@"\n' "$DIR" > "$DIR/bin/python"
    chmod +x "$DIR/bin/python"
fi
"$DIR/bin/python" -c "import gguf, numpy" || die "gguf or numpy does not import in $DIR"
echo "${PINS[*]}" > "$DIR/.pins"
say "ready: $DIR"
