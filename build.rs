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
    // The kernels for every GPU, at the named compute capability; and the Hopper-only ones
    // (wgmma), for sm_90a whatever the capability named, since fused.rs loads them only on a
    // GPU of compute capability 9.0.
    for (src, arch, ptx) in
        [("decode.cu", format!("compute_{cap}"), "decode.ptx"), ("hopper.cu", "compute_90a".into(), "hopper.ptx")]
    {
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", &format!("-arch={arch}"), &format!("src/model/cuda/{src}"), "-o"])
            .arg(out_dir.join(ptx))
            .status()
            .unwrap_or_else(|e| panic!("cannot run {} for the cuda feature: {e}", nvcc.display()));
        assert!(status.success(), "nvcc failed on src/model/cuda/{src}");
    }
}
