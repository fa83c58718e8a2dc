//! Private LayerNorm (the real one, not the BatchNorm stand-in of MPCFormer's latency
//! benchmark): per row, μ = Σx/H, σ² = Σ(x − μ)²/H, y = (x − μ)·rsqrt(σ² + ε)·γ + β, with γ, β
//! secret-shared model weights. Mirrors `model/norm.rs`. 42 rounds per call.

use super::approx::rsqrt;
use super::channel::ChannelError;
use super::fixed::encode;
use super::party::{Party, Share};
use super::protocol::{mul, square, truncate};
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

/// LayerNorm over the last axis of x [rows, H]; γ, β are [H] shares; `eps` as in the config
/// (values below the fixed-point resolution are raised to one ulp, keeping rsqrt's input positive).
pub fn layer_norm(p: &mut Party, x: &Share, gamma: &Share, beta: &Share, eps: f64) -> Result<Share, ChannelError> {
    let (rows, h) = (x.ring.shape[0], x.ring.shape[1]);
    let f = x.frac;
    let mean = row_means(p, x)?;
    let xc = Share { ring: x.ring.sub(&per_row(&mean, h)), frac: f };
    let sq = square(p, &xc)?;
    let var = row_means(p, &sq)?;
    let e = p.public_term(encode(eps, f).max(1));
    let inv = rsqrt(p, &Share { ring: var.ring.add_scalar(e), frac: f })?;
    let xn = mul(p, &xc, &Share { ring: per_row(&inv, h), frac: f })?;
    let y = mul(p, &xn, &Share { ring: per_col(gamma, rows), frac: gamma.frac })?;
    Ok(Share { ring: y.ring.add(&per_col(beta, rows)), frac: f })
}
