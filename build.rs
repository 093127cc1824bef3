//! Compiles the fused decode kernels (`src/model/cuda/decode.cu`) to PTX for the `cuda` feature,
//! with the nvcc candle's own kernels are built with (`CUDA_HOME`/`PATH`) and for the GPU named by
//! `CUDA_COMPUTE_CAP` (as candle-kernels reads it). Builds without `cuda` do nothing here.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/model/cuda/decode.cu");
    println!("cargo:rerun-if-changed=src/model/cuda/paged.cu");
    println!("cargo:rerun-if-changed=src/model/cuda/fp8.cu");
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
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("decode.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "src/model/cuda/decode.cu", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {} for the cuda feature: {e}", nvcc.display()));
    assert!(status.success(), "nvcc failed on src/model/cuda/decode.cu");
}
