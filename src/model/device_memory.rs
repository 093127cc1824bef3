//! How much device memory the KV cache may take: a fraction of what the device has free once
//! the weights are loaded (CUDA), or nothing known (CPU: the engine's default applies).

use candle_core::Device;

/// Bytes for the cache: `fraction` of the device's free memory, when the device can say.
pub fn cache_budget(device: &Device, fraction: f64) -> Option<usize> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        // The free memory of this device: its context made current first, and frees still queued
        // on its stream done (a cache just dropped is otherwise still counted as used).
        d.cuda_stream().context().bind_to_thread().ok()?;
        d.cuda_stream().synchronize().ok()?;
        let (free, _total) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
        return Some((free as f64 * fraction.clamp(0.0, 1.0)) as usize);
    }
    let _ = (device, fraction);
    None
}
