//! Rotary position embedding tables: the inverse frequencies with the configured scaling
//! (linear, Llama 3, YaRN) and the cos/sin tables every forward pass indexes by position.

use candle_core::{DType, Device, Result, Tensor};

use super::llama::{Config, RopeScaling};

/// Inverse frequencies of the rotary embedding, with the configured scaling, and the factor
/// cos/sin are multiplied by (YaRN's attention factor, else 1).
fn inv_freq(cfg: &Config) -> (Vec<f64>, f64) {
    let d = cfg.head_dim as f64;
    let base: Vec<f64> = (0..cfg.head_dim / 2).map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d)).collect();
    match &cfg.rope_scaling {
        None => (base, 1.0),
        Some(RopeScaling::Linear { factor }) => (base.iter().map(|f| f / factor).collect(), 1.0),
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max }) => {
            let low_wavelen = original_max / low_freq_factor;
            let high_wavelen = original_max / high_freq_factor;
            let f = base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (original_max / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (f, 1.0)
        }
        Some(RopeScaling::Yarn { factor, original_max, beta_fast, beta_slow, attention_factor }) => {
            let dim = cfg.head_dim as f64;
            let correction = |rotations: f64| {
                dim * (original_max / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * cfg.rope_theta.ln())
            };
            let low = correction(*beta_fast).floor().max(0.0);
            let high = correction(*beta_slow).ceil().min(dim - 1.0);
            let span = if (high - low).abs() < 1e-3 { 1e-3 } else { high - low };
            let f = base
                .iter()
                .enumerate()
                .map(|(i, &extrapolated)| {
                    let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
                    let keep = 1.0 - ramp;
                    extrapolated / factor * (1.0 - keep) + extrapolated * keep
                })
                .collect();
            (f, *attention_factor)
        }
    }
}

pub(super) fn rope_tables(cfg: &Config, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let (freqs, scale) = inv_freq(cfg);
    // Enough positions for any prompt and completion the model was trained for, bounded so a
    // huge advertised context does not cost memory up front.
    let n = cfg.max_positions.clamp(1, 1 << 17);
    let half = freqs.len();
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for f in &freqs {
            let a = p as f64 * f;
            cos.push((a.cos() * scale) as f32);
            sin.push((a.sin() * scale) as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, half), device)?.to_dtype(dtype)?,
        Tensor::from_vec(sin, (n, half), device)?.to_dtype(dtype)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scaling: Option<RopeScaling>) -> Config {
        Config {
            arch: "llama".into(),
            hidden: 64,
            layers: 1,
            heads: 1,
            kv_heads: 1,
            head_dim: 64,
            intermediate: 1,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_interleaved: false,
            rope_scaling: scaling,
            max_positions: 8,
            vocab: 1,
        }
    }

    #[test]
    fn linear_rope_scaling_divides_every_frequency() {
        let (base, _) = inv_freq(&cfg(None));
        let (scaled, _) = inv_freq(&cfg(Some(RopeScaling::Linear { factor: 4.0 })));
        for (b, s) in base.iter().zip(&scaled) {
            assert!((b / 4.0 - s).abs() < 1e-12);
        }
    }

    #[test]
    fn yarn_keeps_high_frequencies_and_interpolates_low_ones() {
        let (base, _) = inv_freq(&cfg(None));
        let yarn = RopeScaling::Yarn {
            factor: 4.0,
            original_max: 4096.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: 1.1,
        };
        let (scaled, scale) = inv_freq(&cfg(Some(yarn)));
        assert_eq!(scale, 1.1);
        assert!((scaled[0] - base[0]).abs() < 1e-12, "the fastest rotation is kept");
        let last = base.len() - 1;
        assert!((scaled[last] - base[last] / 4.0).abs() < 1e-12, "the slowest is interpolated");
    }
}
