//! Train/eval mode and seeded randomness for dropout and initialisation.
//!
//! candle's CPU backend cannot be seeded (`Device::set_seed` fails on CPU) and its dropout draws
//! from the thread RNG, so training would not be reproducible. All randomness of a run therefore
//! comes from here, derived from the run seed and the step number, which also makes resumed runs
//! draw exactly what an uninterrupted run would have drawn.

use candle_core::{Device, Result, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand::rngs::StdRng;
use rayon::prelude::*;

/// Whether a forward pass is training (dropout active, autograd-capable ops) or evaluation.
pub enum Mode<'a> {
    Eval,
    Train(&'a mut StdRng),
}

impl Mode<'_> {
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }

    /// Inverted dropout: zero each element with probability `p`, scale survivors by 1/(1−p).
    pub fn dropout(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        match self {
            Mode::Eval => Ok(x.clone()),
            Mode::Train(_) if p <= 0.0 => Ok(x.clone()),
            Mode::Train(rng) => {
                let mask = dropout_mask(rng, x.elem_count(), p as f32);
                let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
                x * mask
            }
        }
    }
}

/// A mask of 0 and 1/(1−p), filled in parallel from per-chunk seeds drawn from `rng`.
fn dropout_mask(rng: &mut StdRng, n: usize, p: f32) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    let scale = 1.0 / (1.0 - p);
    // Threshold on 24 uniform bits, the precision of an f32 in [0, 1).
    let thresh = (p as f64 * (1u64 << 24) as f64) as u32;
    let seeds: Vec<u64> = (0..n.div_ceil(CHUNK)).map(|_| rng.next_u64()).collect();
    let mut out = vec![0f32; n];
    out.par_chunks_mut(CHUNK).zip(seeds.par_iter()).for_each(|(chunk, &seed)| {
        let mut r = StdRng::seed_from_u64(seed);
        for v in chunk.iter_mut() {
            *v = if (r.next_u32() >> 8) >= thresh { scale } else { 0.0 };
        }
    });
    out
}

/// A seeded generator for one purpose of one step: reproducible and independent of resume point.
pub fn step_rng(seed: u64, purpose: u64, step: u64) -> StdRng {
    let mut s = StdRng::seed_from_u64(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let base = s.next_u64();
    StdRng::seed_from_u64(base ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// N(mean, std²) samples (Box–Muller), used for BERT's weight initialisation.
pub fn randn(rng: &mut StdRng, shape: &[usize], std: f64, dev: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        v.push((r * t.cos() * std) as f32);
        if v.len() < n {
            v.push((r * t.sin() * std) as f32);
        }
    }
    Tensor::from_vec(v, shape, dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_rate_scale_and_determinism() {
        let mut a = StdRng::seed_from_u64(7);
        let m = dropout_mask(&mut a, 200_000, 0.1);
        let zeros = m.iter().filter(|&&x| x == 0.0).count() as f64 / m.len() as f64;
        assert!((zeros - 0.1).abs() < 0.005, "{zeros}");
        assert!(m.iter().all(|&x| x == 0.0 || (x - 1.0 / 0.9).abs() < 1e-6));
        let mut b = StdRng::seed_from_u64(7);
        assert_eq!(m, dropout_mask(&mut b, 200_000, 0.1));
    }

    #[test]
    fn eval_mode_is_identity() {
        let x = Tensor::ones((3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = Mode::Eval.dropout(&x, 0.5).unwrap();
        assert_eq!(y.sum_all().unwrap().to_scalar::<f32>().unwrap(), 12.0);
    }

    #[test]
    fn randn_moments() {
        let mut r = StdRng::seed_from_u64(1);
        let t = randn(&mut r, &[100_000], 0.02, &Device::Cpu).unwrap();
        let v: Vec<f32> = t.to_vec1().unwrap();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 5e-4 && (var.sqrt() - 0.02).abs() < 5e-4, "{mean} {var}");
    }

    #[test]
    fn step_rngs_differ_by_step_and_purpose() {
        let a = step_rng(42, 1, 0).next_u64();
        assert_ne!(a, step_rng(42, 1, 1).next_u64());
        assert_ne!(a, step_rng(42, 2, 0).next_u64());
        assert_eq!(a, step_rng(42, 1, 0).next_u64());
    }
}
