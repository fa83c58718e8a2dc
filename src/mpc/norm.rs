//! Private LayerNorm (the real one, not the BatchNorm stand-in of MPCFormer's latency
//! benchmark): per row, μ = Σx/H, σ² = Σ(x − μ)²/H, y = (x − μ)·rsqrt(σ² + ε)·γ + β, with γ, β
//! secret-shared model weights. Mirrors `model/norm.rs`. 12 rounds per call:
//! mean 1; (x − μ)² and (x − μ)·γ from one opening of x − μ (γ carries a fixed mask opened
//! once per model, `protocol::square_and_vec_mul`) and one batched truncation (the γ product
//! does not wait for the statistics); then `rsqrt_scaled_times` 9: normalisation 5,
//! two Newton steps of one round each (u·y³ as a power product fused with y's truncation) —
//! with (x − μ)·γ times the per-leading-bit constant riding along in the first two rounds, and
//! its product with 1/√u in the last truncation's round — and one final truncation. The 1/H of the variance is folded into
//! the public constants (√H/√(Σ(x − μ)² + H·ε) = 1/√(σ² + ε)).

use super::channel::ChannelError;
use super::fixed::encode;
use super::party::{Party, Share};
use super::protocol::{square_and_vec_mul, truncate, VecShare};
use super::ring::RingTensor;

/// Multiply by a public real constant (fixed-point, one truncation).
pub fn scale_public(p: &mut Party, x: &Share, c: f64) -> Result<Share, ChannelError> {
    let k = encode(c, x.frac);
    truncate(p, &Share { ring: x.ring.scale(k), frac: 2 * x.frac }, x.frac)
}

fn row_means(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let h = x.ring.shape[1];
    let rows = x.ring.shape[0];
    let sums: Vec<u64> =
        (0..rows).map(|r| x.ring.data[r * h..(r + 1) * h].iter().fold(0u64, |a, &b| a.wrapping_add(b))).collect();
    scale_public(p, &Share { ring: RingTensor::new(&[rows], sums), frac: x.frac }, 1.0 / h as f64)
}

fn per_row(v: &Share, h: usize) -> RingTensor {
    let rows = v.ring.len();
    RingTensor::new(&[rows, h], v.ring.data.iter().flat_map(|&x| std::iter::repeat_n(x, h)).collect())
}

fn per_col(v: &Share, rows: usize) -> RingTensor {
    let h = v.ring.len();
    RingTensor::new(&[rows, h], (0..rows).flat_map(|_| v.ring.data.iter().copied()).collect())
}

/// LayerNorm over the last axis of x [rows, H]; γ a prepared [H] vector, β [H] shares; `eps` as in the config
/// (values below two units of the fixed-point resolution are raised to two: the truncated
/// variance of a constant row can be −1 unit, and rsqrt's input must stay positive).
pub fn layer_norm(p: &mut Party, x: &Share, gamma: &VecShare, beta: &Share, eps: f64) -> Result<Share, ChannelError> {
    let (rows, h) = (x.ring.shape[0], x.ring.shape[1]);
    let f = x.frac;
    let mean = row_means(p, x)?;
    let xc = Share { ring: x.ring.sub(&per_row(&mean, h)), frac: f };
    let (sq, xg) = square_and_vec_mul(p, &xc, gamma)?;
    // Σ(x − μ)² per row at scale 2f (exact), truncated together with (x − μ)·γ.
    let ss: Vec<u64> =
        (0..rows).map(|r| sq.ring.data[r * h..(r + 1) * h].iter().fold(0u64, |a, &b| a.wrapping_add(b))).collect();
    let tr = super::protocol::truncate_many(p, &[Share { ring: RingTensor::new(&[rows], ss), frac: 2 * f }, xg], f)?;
    let e = p.public_term(encode(eps * h as f64, f).max(2));
    let y = super::approx::rsqrt_scaled_times(p, &Share { ring: tr[0].ring.add_scalar(e), frac: f }, (h as f64).sqrt(), &tr[1])?;
    Ok(Share { ring: y.ring.add(&per_col(beta, rows)), frac: f })
}
