//! How much device memory the KV cache may take: a fraction of what the device has free once
//! the weights are loaded (CUDA), or nothing known (CPU: the engine's default applies).

use candle_core::Device;

/// Bytes for the cache: `fraction` of the device's free memory, when the device can say.
pub fn cache_budget(device: &Device, fraction: f64) -> Option<usize> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let _ = d;
        let (free, _total) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
        return Some((free as f64 * fraction.clamp(0.0, 1.0)) as usize);
    }
    let _ = (device, fraction);
    None
}
