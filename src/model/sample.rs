//! Sampling a batch of rows on the logits' own device: one token per row, with temperature and
//! top-p, and only the chosen ids leave the device.
//!
//! Why: sampling each row on the CPU moves the whole vocabulary across and sorts it (top-p) for
//! every row and step; on a GPU that cost, not the model, set the decode rate. Here a row's
//! token is drawn exactly from its top-p distribution without sorting: the Gumbel-max trick draws
//! from the whole softmax, and a draw outside the nucleus (the tokens more probable than it
//! already hold `top_p` of the mass) is rejected and drawn again, which happens with probability
//! at most `1 - top_p`. Rejection from the full distribution onto the nucleus gives exactly the
//! nucleus distribution renormalized.

use candle_core::{DType, Device, Result, Tensor, D};

/// Draws for `logits` (`(rows, vocab)`, any float dtype): greedy when `temperature` is 0.
/// Randomness comes from the device's generator (`Device::set_seed`).
pub fn sample_rows(logits: &Tensor, temperature: f64, top_p: f64) -> Result<Vec<u32>> {
    let logits = logits.to_dtype(DType::F32)?;
    if temperature <= 0.0 {
        return logits.argmax(D::Minus1)?.to_vec1::<u32>();
    }
    let scaled = (logits / temperature)?;
    let probs = candle_nn::ops::softmax_last_dim(&scaled)?;
    let rows = scaled.dim(0)?;
    let mut out = vec![0u32; rows];
    let mut todo: Vec<usize> = (0..rows).collect();
    // A row is drawn again only when its draw fell outside the nucleus; bounded for safety (the
    // nucleus holds at least `top_p` of the mass, so 64 misses in a row do not happen).
    for round in 0..64 {
        let (s, p) = if todo.len() == rows {
            (scaled.clone(), probs.clone())
        } else {
            let idx = Tensor::new(todo.iter().map(|&r| r as u32).collect::<Vec<_>>(), scaled.device())?;
            (scaled.index_select(&idx, 0)?, probs.index_select(&idx, 0)?)
        };
        let u = Tensor::rand(1e-20f32, 1.0, s.shape(), s.device())?;
        let gumbel = u.log()?.neg()?.log()?.neg()?;
        let pick = (&s + gumbel)?.argmax_keepdim(D::Minus1)?;
        let picks = pick.flatten_all()?.to_vec1::<u32>()?;
        let accepted: Vec<bool> = if top_p >= 1.0 || round == 63 {
            vec![true; todo.len()]
        } else {
            // The mass of the tokens strictly more probable than the draw.
            let p_pick = p.gather(&pick, D::Minus1)?;
            let above = p.broadcast_gt(&p_pick)?.to_dtype(DType::F32)?.mul(&p)?.sum(D::Minus1)?;
            above.to_vec1::<f32>()?.into_iter().map(|m| (m as f64) < top_p).collect()
        };
        let mut again = Vec::new();
        for ((&row, &tok), ok) in todo.iter().zip(&picks).zip(accepted) {
            if ok {
                out[row] = tok;
            } else {
                again.push(row);
            }
        }
        if again.is_empty() {
            break;
        }
        todo = again;
    }
    Ok(out)
}

/// Whether sampling on the device pays: on a GPU, yes; on the CPU the per-row sampler (with a
/// seed per sample) is kept.
pub fn on_device(device: &Device) -> bool {
    !device.is_cpu()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(rows: &[&[f32]]) -> Tensor {
        let v = rows[0].len();
        Tensor::from_vec(rows.iter().flat_map(|r| r.iter().copied()).collect::<Vec<_>>(), (rows.len(), v), &Device::Cpu)
            .unwrap()
    }

    #[test]
    fn temperature_zero_is_argmax_per_row() {
        let l = logits(&[&[0.0, 5.0, 1.0], &[3.0, 0.0, 1.0]]);
        assert_eq!(sample_rows(&l, 0.0, 0.95).unwrap(), [1, 0]);
    }

    #[test]
    fn draws_stay_inside_the_nucleus() {
        // Token 2 holds ~88 % of the mass: with top_p 0.5 it is the whole nucleus.
        let l = logits(&[&[0.0, 1.0, 4.0, 0.5]]);
        for _ in 0..50 {
            assert_eq!(sample_rows(&l, 1.0, 0.5).unwrap(), [2]);
        }
    }

    #[test]
    fn without_top_p_every_token_is_drawn_in_proportion() {
        let row: &[f32] = &[0.0; 4];
        let l = logits(&vec![row; 64]);
        let mut counts = [0usize; 4];
        for _ in 0..20 {
            for t in sample_rows(&l, 1.0, 1.0).unwrap() {
                counts[t as usize] += 1;
            }
        }
        // 1,280 uniform draws over 4 tokens: each near 320.
        assert!(counts.iter().all(|&c| (240..400).contains(&c)), "{counts:?}");
    }
}
