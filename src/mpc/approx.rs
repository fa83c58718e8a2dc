//! Private counterparts of `model/approx.rs` (MPCFormer's MPC-friendly functions).

use super::channel::ChannelError;
use super::party::{Party, Share};
use super::protocol::{square_raw, truncate};

/// Quad(x) = 0.125x² + 0.25x + 0.5 in two rounds (one square, one truncation):
/// 8·Quad(x) = x² + 2x + 4 is formed exactly at scale 2f (x scaled up by 2^f, the constant by
/// 2^2f), then a single truncation by f + 3 bits divides by 8 and returns to scale f.
pub fn quad(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let f = x.frac;
    let sq = square_raw(p, x)?;
    let lin = x.ring.scale(2u64.wrapping_shl(f));
    let four = p.public_term(4u64 << (2 * f));
    let z = Share { ring: sq.ring.add(&lin).add_scalar(four), frac: 2 * f + 3 };
    truncate(p, &z, f + 3)
}

use super::compare::{bit_to_arith, to_bits};
use super::protocol::{mul, mul_raw};
use super::ring::RingTensor;

/// 1/x for shared positive x (|x·2^f| < 2^62), by normalisation and Newton–Raphson (the SPU
/// approach; CrypTen's unnormalised NR with a fixed initial guess diverges beyond x ≈ 253):
/// 1. A2B of x (7 rounds) and a prefix-OR from the top (6 rounds) give the one-hot word h of
///    x's leading bit k;
/// 2. h's bits to arithmetic (one round of daBits): c = 2^(61−k) and d = 2^(2f−k) (0 when k > 2f);
/// 3. u = x·c / 2^(61−f) ∈ [1, 2) at scale f (one product, one truncation; x·c ∈ [2^61, 2^62)
///    stays inside the truncation's |v| < 2^62 domain);
/// 4. w ≈ 1/u: w₀ = 24/17 − (8/17)·u (the minimax line on [1, 2), relative error ≤ 1/17),
///    three NR steps w ← w(2 − u·w) (error 5.9% → 0.35% → 1.2e−5 → 1.5e−10; 9 rounds);
/// 5. 1/x = w·2^(f−k) = w·d / 2^f (one product, one truncation).
///
/// 28 rounds in all. x must be positive; x = 0 gives 0 (or one ulp), and results below 2^−f
/// round to 0 or one ulp.
pub fn reciprocal(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let f = x.frac;
    // d = 2^(f−k) at scale f, i.e. the integer 2^(2f−k) (0 when k > 2f).
    let (u, d) = normalise(p, x, |k| if k <= 2 * f { 1u64 << (2 * f - k) } else { 0 })?;
    // (8/17)·u needs a product by a public fixed-point constant: scale by round(8/17·2^f), truncate.
    let slope = super::fixed::encode(8.0 / 17.0, f);
    let su = truncate(p, &Share { ring: u.ring.scale(slope), frac: 2 * f }, f)?;
    let w0 = p.public_term(super::fixed::encode(24.0 / 17.0, f));
    let mut w = Share { ring: su.ring.neg().add_scalar(w0), frac: f };
    // Each step in 3 rounds: u·w stays at scale 2f (no truncation), 2 − u·w is formed there,
    // and w·(2 − u·w) at scale 3f (|·| < 2^50) is truncated once by 2f.
    let two = p.public_term(super::fixed::encode(2.0, 2 * f));
    for _ in 0..3 {
        let t = mul_raw(p, &u, &w)?;
        let e = Share { ring: t.ring.neg().add_scalar(two), frac: 2 * f };
        let we = mul_raw(p, &w, &e)?;
        w = truncate(p, &we, 2 * f)?;
    }
    let r = mul_raw(p, &w, &d)?;
    truncate(p, &Share { ring: r.ring, frac: f + f }, f)
}

/// Leading-bit normalisation of a positive x (|x·2^f| < 2^62), 16 rounds: returns u ∈ [1, 2) at
/// scale f with x = u·2^(k−f), and Σᵢ [k = i]·factor(i) as shares (public per-position
/// constants combined with the one-hot leading bit; `factor` is an encoded ring value).
fn normalise(p: &mut Party, x: &Share, factor: impl Fn(u32) -> u64) -> Result<(Share, Share), ChannelError> {
    let f = x.frac;
    assert!(2 * f < 62, "normalise: scale {f} too large");
    let n = x.ring.len();
    let shape = x.ring.shape.clone();
    let bits = to_bits(p, &Share { ring: x.ring.clone(), frac: 0 })?;
    // Prefix-OR towards the low bits: y_i = OR of bits ≥ i.
    let mut y = bits;
    for s in [1u32, 2, 4, 8, 16, 32] {
        let ys = y.map(|w| w >> s);
        let and = super::compare::and_words(p, &y, &ys)?;
        y = RingTensor::new(&shape, (0..n).map(|i| y.data[i] ^ ys.data[i] ^ and.data[i]).collect());
    }
    let h = y.zip_words(&y.map(|w| w >> 1), |a, b| a ^ b);
    // Bits 0..=61 of h (x < 2^62), element-major, to arithmetic in one round.
    let per = 62usize;
    let flat = RingTensor::new(&[n * per], (0..n * per).map(|j| (h.data[j / per] >> (j % per)) & 1).collect());
    let a = bit_to_arith(p, &flat)?;
    let mut c = vec![0u64; n];
    let mut d = vec![0u64; n];
    for e in 0..n {
        for i in 0..per {
            let bit = a.ring.data[e * per + i];
            c[e] = c[e].wrapping_add(bit.wrapping_mul(1u64 << (61 - i)));
            d[e] = d[e].wrapping_add(bit.wrapping_mul(factor(i as u32)));
        }
    }
    let c = Share { ring: RingTensor::new(&shape, c), frac: 0 };
    // x·c ∈ [2^61, 2^62): inside the truncation's domain.
    let v = mul_raw(p, &Share { ring: x.ring.clone(), frac: 61 }, &c)?;
    let u = truncate(p, &v, 61 - f)?;
    Ok((u, Share { ring: RingTensor::new(&shape, d), frac: f }))
}

/// 1/√x for shared positive x, by the same normalisation: x = u·2^(k−f), u ∈ [1, 2), so
/// 1/√x = (1/√u)·2^(−(k−f)/2), the second factor a public constant per leading-bit position.
/// y₀ = 1.2740 − 0.2929·u (the chord of 1/√u on [1, 2) lowered by half its largest gap:
/// relative error ≤ 2.7%), then three Newton steps y ← y(3 − u·y²)/2 (2.7% → 1.1e−3 → 1.8e−6
/// → 5e−12). 16 + 1 + 15 + 2 = 34 rounds.
pub fn rsqrt(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let f = x.frac;
    let (u, d) = normalise(p, x, |k| super::fixed::encode(2f64.powf(-(k as f64 - f as f64) / 2.0), f))?;
    let slope = super::fixed::encode(0.2929, f);
    let su = truncate(p, &Share { ring: u.ring.scale(slope), frac: 2 * f }, f)?;
    let y0 = p.public_term(super::fixed::encode(1.2740, f));
    let mut y = Share { ring: su.ring.neg().add_scalar(y0), frac: f };
    // Each step in 5 rounds: y² and u·y² stay untruncated (scales 2f, 3f; |u·y²| < 2^50), one
    // truncation by 2f brings 3 − u·y² to scale f.
    let three3 = p.public_term(super::fixed::encode(3.0, 3 * f));
    for _ in 0..3 {
        let y2 = super::protocol::square_raw(p, &y)?;
        let uy2 = mul_raw(p, &u, &y2)?;
        let t3 = Share { ring: uy2.ring.neg().add_scalar(three3), frac: 3 * f };
        let t = truncate(p, &t3, 2 * f)?;
        let yt = mul_raw(p, &y, &t)?;
        // ·½ folded into the truncation.
        y = truncate(p, &yt, f + 1)?;
        y.frac = f;
    }
    let r = mul_raw(p, &y, &d)?;
    truncate(p, &r, f)
}

/// Sum over the last axis (local), [rows, L] → [rows].
fn row_sums(x: &Share) -> Share {
    let l = *x.ring.shape.last().expect("rank ≥ 1");
    let rows = x.ring.len() / l.max(1);
    let sums = (0..rows).map(|r| x.ring.data[r * l..(r + 1) * l].iter().fold(0u64, |a, &b| a.wrapping_add(b))).collect();
    Share { ring: RingTensor::new(&[rows], sums), frac: x.frac }
}

/// Repeat each row value L times, [rows] → [rows, L] (local).
fn broadcast_rows(x: &Share, shape: &[usize]) -> Share {
    let l = *shape.last().expect("rank ≥ 1");
    let data = x.ring.data.iter().flat_map(|&v| std::iter::repeat_n(v, l)).collect();
    Share { ring: RingTensor::new(shape, data), frac: x.frac }
}

/// Normalise non-negative row values q by their row sums: q / Σq.
fn normalise_rows(p: &mut Party, q: &Share) -> Result<Share, ChannelError> {
    let inv = reciprocal(p, &row_sums(q))?;
    mul(p, q, &broadcast_rows(&inv, &q.ring.shape))
}

/// MPCFormer's 2Quad over the last axis: (s + c)² / Σ (s + c)², for unpadded rows (batch-1
/// private inference has no padding keys). 35 rounds: square 2, reciprocal 31, product 2.
pub fn two_quad(p: &mut Party, s: &Share, c: f64) -> Result<Share, ChannelError> {
    let shift = p.public_term(super::fixed::encode(c, s.frac));
    let q = super::protocol::square(p, &Share { ring: s.ring.add_scalar(shift), frac: s.frac })?;
    normalise_rows(p, &q)
}

/// MPCFormer's 2ReLU over the last axis: relu(s) / Σ relu(s). Its ε = 1e-12 is below the
/// fixed-point resolution, so a row with no positive score gives zeros instead of 1/L.
pub fn two_relu(p: &mut Party, s: &Share) -> Result<Share, ChannelError> {
    let r = super::compare::relu(p, s)?;
    normalise_rows(p, &r)
}
