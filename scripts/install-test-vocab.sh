#!/usr/bin/env bash
# Installs reference tokenizer data into .toolchain/vocab/ of this checkout (git-ignored),
# idempotently: llama.cpp's vocabulary-only GGUF files of DeepSeek-LLM and DeepSeek-Coder with
# their test inputs and the token ids Hugging Face's tokenizers give for them (*.inp, *.out).
# They come from the source distribution of PyPI llama-cpp-python==0.3.36 (which vendors
# llama.cpp, MIT), fetched from PyPI's file host by the link on its simple index and checked by
# sha256; nothing is built. The tokenizer tests compare subgoal's GGUF tokenizers with them.
# Fails loudly (non-zero, with the reason) when any step cannot be done.
# Override the location with SUBGOAL_TOOLCHAIN_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SUBGOAL_TOOLCHAIN_DIR:-$ROOT/.toolchain}/vocab"
SDIST="llama_cpp_python-0.3.36.tar.gz"
SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
INDEX="${PIP_INDEX_URL:-https://pypi.org/simple}"

die() { echo "install-test-vocab: $*" >&2; exit 1; }
say() { echo "install-test-vocab: $*" >&2; }

command -v python3 >/dev/null || die "python3 is required"
mkdir -p "$DIR"
if [[ "$(cat "$DIR/.sdist-sha256" 2>/dev/null)" == "$SHA256" ]]; then
    exit 0
fi
say "fetching $SDIST from PyPI"
python3 - "$INDEX" "$SDIST" "$SHA256" "$DIR" <<'PY' || die "could not fetch and unpack $SDIST"
import hashlib, os, re, sys, tarfile, tempfile, urllib.parse, urllib.request
index, sdist, sha, dest = sys.argv[1:]
page = urllib.request.urlopen(f"{index.rstrip('/')}/llama-cpp-python/", timeout=120).read().decode()
links = [l for l in re.findall(r'href="([^"]+)"', page) if l.split("#")[0].endswith("/" + sdist)]
if not links:
    sys.exit(f"{sdist} is not on {index}")
url = urllib.parse.urljoin(f"{index.rstrip('/')}/llama-cpp-python/", links[0].split("#")[0])
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, sdist)
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=600) as r, open(path, "wb") as f:
        while chunk := r.read(1 << 20):
            h.update(chunk)
            f.write(chunk)
    if h.hexdigest() != sha:
        sys.exit(f"sha256 mismatch for {sdist}: got {h.hexdigest()}, want {sha}")
    prefix = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
    wanted = [f"ggml-vocab-{m}.gguf{ext}" for m in ("deepseek-llm", "deepseek-coder") for ext in ("", ".inp", ".out")]
    with tarfile.open(path) as t:
        for name in wanted:
            member = t.getmember(prefix + name)
            src = t.extractfile(member)
            with open(os.path.join(dest, name + ".part"), "wb") as out:
                out.write(src.read())
            os.replace(os.path.join(dest, name + ".part"), os.path.join(dest, name))
PY
echo "$SHA256" > "$DIR/.sdist-sha256"
say "ready: $DIR"
