//! Compiles the fused decode kernels (`src/model/cuda/decode.cu`) to PTX for the `cuda` feature,
//! with the nvcc candle's own kernels are built with (`CUDA_HOME`/`PATH`) and for the GPU named by
//! `CUDA_COMPUTE_CAP` (as candle-kernels reads it), and the Hopper-only ones (`hopper.cu`) for
//! sm_90a. Builds without `cuda` do nothing here.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/model/cuda/decode.cu");
    println!("cargo:rerun-if-changed=src/model/cuda/paged.cu");
    println!("cargo:rerun-if-changed=src/model/cuda/fp8.cu");
    println!("cargo:rerun-if-changed=src/model/cuda/common.cuh");
    println!("cargo:rerun-if-changed=src/model/cuda/hopper.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("bin/nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // nvcc: `src` to PTX for `arch`; whether it succeeded.
    let nvcc_ptx = |src: &str, arch: &str, ptx: &str| {
        Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", &format!("-arch={arch}"), &format!("src/model/cuda/{src}"), "-o"])
            .arg(out_dir.join(ptx))
            .status()
            .unwrap_or_else(|e| panic!("cannot run {} for the cuda feature: {e}", nvcc.display()))
            .success()
    };
    // The kernels for every GPU, at the named compute capability.
    assert!(nvcc_ptx("decode.cu", &format!("compute_{cap}"), "decode.ptx"), "nvcc failed on src/model/cuda/decode.cu");
    // The Hopper-only ones (wgmma), for sm_90a whatever the capability named, since fused.rs loads
    // them only on a GPU of compute capability 9.0. An nvcc before CUDA 12 has no sm_90a: the
    // build goes on without them (an empty module, which fused.rs does not load).
    if !nvcc_ptx("hopper.cu", "compute_90a", "hopper.ptx") {
        println!("cargo:warning=nvcc could not build src/model/cuda/hopper.cu for sm_90a; the Hopper FP8 GEMM kernels are left out");
        std::fs::write(out_dir.join("hopper.ptx"), "").expect("writing an empty hopper.ptx");
    }
}
