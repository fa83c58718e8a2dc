//! Private LayerNorm (the real one, not the BatchNorm stand-in of MPCFormer's latency
//! benchmark): per row, μ = Σx/H, σ² = Σ(x − μ)²/H, y = (x − μ)·rsqrt(σ² + ε)·γ + β, with γ, β
//! secret-shared model weights. Mirrors `model/norm.rs`. 9 rounds per call, and the input may
//! arrive untruncated (a linear layer's output at scale 2f plus the residual), which saves the
//! producer's truncation round:
//! 1. the centring, the rescaling to scale f and the products in **one** round: with
//!    S = Σx per row (local), H·x − S = H·(x − μ) is exact, and one truncation by
//!    (scale(x) − f) + ⌈log₂H⌉ bits gives t = ρ·(x − μ) at scale f, ρ = H/2^⌈log₂H⌉ ∈ (1/2, 1]
//!    (no separate mean truncation; LayerNorm is invariant to the common factor ρ except for ε,
//!    which is rescaled by ρ²). t² and t·γ are formed in the same round (`fused::truncate_mul`:
//!    t is a public value plus dealer-known secrets once the truncation opens, and γ carries a
//!    fixed mask whose γ − B was opened once per model, so neither product opens anything);
//! 2. `rsqrt_scaled_times` on Σt² + ρ²Hε at scale 2f, **untruncated** (the leading-bit
//!    normalisation does not care about the scale), 8 rounds: normalisation 4; two Newton
//!    steps of one round each (u·y³ as a power product fused with y's truncation), with t·γ
//!    truncated in the first and multiplied by the per-row leading-bit constant d there; that
//!    product truncated in the third round and multiplied by the per-row 1/√u, both operands
//!    truncation outputs of that round; one final truncation. Per element that is four
//!    truncations and nothing else. √H/√(Σt² + ρ²Hε) = 1/(ρ·√(σ² + ε)), so
//!    (t·γ)·√H/√(Σt² + ρ²Hε) = (x − μ)·γ/√(σ² + ε).
//!
//! Range: H·(x − μ) at x's scale must stay below 2^62 (|x − μ| < 2^16 for x at 2f = 36 bits and
//! H = 768), and Σt² < 2^62 at scale 2f (σ < 2^8 at f = 18, H = 768) — the old form's bounds.

use super::channel::ChannelError;
use super::fixed::encode;
use super::approx::{broadcast_rows, row_sums};
use super::fused::{truncate_mul, Operand};
use super::party::{Party, Share};
use super::protocol::VecShare;
use super::ring::RingTensor;

fn per_col(v: &Share, rows: usize) -> Share {
    let h = v.ring.len();
    Share { ring: RingTensor::new(&[rows, h], (0..rows).flat_map(|_| v.ring.data.iter().copied()).collect()), frac: v.frac }
}

/// LayerNorm over the last axis of x [rows, H] (H ≥ 2) at any scale ≥ f; γ a prepared [H] vector
/// (`protocol::prepare_vector`) and β [H] shares, both at scale f; the output at scale f. `eps`
/// as in the config (raised to two units of the scale-f resolution: a constant row's centred
/// values can be ±1 unit after the truncation, and rsqrt's input must stay positive).
pub fn layer_norm(p: &mut Party, x: &Share, gamma: &VecShare, beta: &Share, eps: f64, f: u32) -> Result<Share, ChannelError> {
    let (rows, h) = (x.ring.shape[0], x.ring.shape[1]);
    assert!(h >= 2 && x.frac >= f && gamma.frac == f, "layer_norm: H = {h}, scale {} to {f}, γ at {}", x.frac, gamma.frac);
    let lg = usize::BITS - (h - 1).leading_zeros();
    let rho = h as f64 / 2f64.powi(lg as i32);
    // H·x − Σx = H·(x − μ), exact; truncated to ρ·(x − μ) at scale f.
    let centred = Share { ring: x.ring.scale(h as u64).sub(&broadcast_rows(&row_sums(x), &x.ring.shape).ring), frac: x.frac + lg };
    let t0 = Operand::t(0);
    let (_, mut pr) = truncate_mul(p, &[(&centred, x.frac + lg - f)], &[(t0, t0), (t0, Operand::Fixed(gamma))])?;
    let tg = pr.pop().expect("two products");
    let sq = pr.pop().expect("two products");
    // Σt² + ρ²·H·ε at scale 2f, exact.
    let e = encode(rho * rho * eps * h as f64, 2 * f).max(2u64 << f);
    let ss = row_sums(&sq).ring.add_scalar(p.public_term(e));
    let y = super::approx::rsqrt_scaled_times(p, &Share { ring: ss, frac: 2 * f }, f, (h as f64).sqrt(), &tg)?;
    Ok(Share { ring: y.ring.add(&per_col(beta, rows).ring), frac: f })
}
