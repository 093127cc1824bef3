#!/usr/bin/env bash
# Builds the CUDA binary (`--features cuda`) on a machine without a GPU or CUDA toolkit, after
# docs/models.md ("Building for CUDA"): nvcc and the CUDA 13.0 libraries come from pinned PyPI wheels
# (pin the GPU machine's CUDA version: a newer nvcc emits PTX its driver rejects), a libcuda stub
# satisfies the link (the real driver is loaded at run time), CUDA_COMPUTE_CAP picks the GPU.
#
#   scripts/build-cuda.sh [DIR]      # DIR (default .cuda/, git-ignored) holds the toolkit venv
#
# Output: target-cuda/release/subgoal (and the generate_throughput and gpu_decode benchmarks), plus stripped,
# xz-compressed copies in .gpu/ ready to travel to a GPU machine. Run there with
#   LD_LIBRARY_PATH=<the machine's CUDA 13 libs>:$LD_LIBRARY_PATH subgoal generate --device cuda …
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.cuda}"
CAP="${CUDA_COMPUTE_CAP:-90}"
die() { echo "build-cuda: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is required"
command -v gcc >/dev/null || die "gcc is required"
if [[ ! -x "$DIR/venv/bin/python" ]]; then
    python3 -m venv "$DIR/venv" || die "cannot create a venv in $DIR"
fi
"$DIR/venv/bin/pip" install --quiet --no-deps \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.5.25 nvidia-cuda-nvrtc==13.0.88 \
    || die "pip could not install the CUDA 13.0 wheels"
CU="$(ls -d "$DIR"/venv/lib/python3*/site-packages/nvidia/cu13 | head -n1)"
[[ -x "$CU/bin/nvcc" ]] || die "no nvcc under $CU"
# Unversioned link names, which the wheels do not ship.
for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "$CU/lib/lib$l.so"; done
ln -sf libcurand.so.10 "$CU/lib/libcurand.so"
# A libcuda stub with every driver symbol cudarc declares.
(cd "$ROOT" && cargo fetch --locked >/dev/null) || die "cargo fetch failed"
CUDARC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | head -n1)"
[[ -n "$CUDARC" ]] || die "cudarc sources not found after cargo fetch"
mkdir -p "$CU/lib/stubs"
grep -oP '^\s+fn \Kcu\w+(?=\()' "$CUDARC/src/driver/sys/mod.rs" | sort -u | awk '{print "void "$1"(void){}"}' > "$DIR/stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/stubs/libcuda.so" "$DIR/stub.c" || die "cannot build the libcuda stub"
cd "$ROOT"
BENCHES=(generate_throughput gpu_decode gpu_parity gpu_serve)
PATH="$CU/bin:$PATH" CUDA_HOME="$CU" CUDA_COMPUTE_CAP="$CAP" \
    cargo build --release --locked --features cuda --target-dir target-cuda --bin subgoal "${BENCHES[@]/#/--bench=}" \
    || die "cargo build --features cuda failed"
mkdir -p .gpu
strip -o .gpu/subgoal target-cuda/release/subgoal
for b in "${BENCHES[@]}"; do
    BENCH="$(ls -t target-cuda/release/deps/$b-* | grep -v '\.d$' | head -n1)"
    strip -o ".gpu/$b" "$BENCH"
done
xz -6 -f .gpu/subgoal "${BENCHES[@]/#/.gpu/}"
echo "build-cuda: ready: .gpu/subgoal.xz ${BENCHES[*]/#/.gpu/} (each .xz)" >&2
