//! Private counterparts of `model/approx.rs` (MPCFormer's MPC-friendly functions, spec §1.1)
//! and of the exact functions they replace (GeLU, softmax, tanh for the pooler), each with its
//! round count and accuracy domain in its doc comment. The exact functions follow SPU/PUMA
//! (mpc-protocols.md §4): max-subtracted softmax, piecewise-polynomial GeLU, normalised
//! reciprocal; unlike CrypTen's they have no domain cliff (exp is clipped, not extrapolated).
//!
//! Every public constant the parties multiply shares by is derived from literals with IEEE
//! basic operations only (+ − × ÷ √, which are correctly rounded everywhere), never with libm's
//! transcendental functions: two parties whose constants differ by one unit multiply a random
//! share by different numbers, and the output becomes garbage. (`det_tanh` and `rsqrt_factor`
//! exist for that reason.)

use super::channel::ChannelError;
use super::party::{Party, Share};
use super::protocol::{square_raw, truncate};

/// Quad(x) = 0.125x² + 0.25x + 0.5 in two rounds (one square, one truncation):
/// 8·Quad(x) = x² + 2x + 4 is formed exactly at scale 2f (x scaled up by 2^f, the constant by
/// 2^2f), then a single truncation by f + 3 bits divides by 8 and returns to scale f.
pub fn quad(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let sq = square_raw(p, x)?;
    quad_from_square(p, x, &sq)
}

/// Quad of a value given untruncated (`raw` at scale f + shift, truncated by `shift` to f):
/// the truncation and the square share one round, then one truncation as in [`quad`] — the
/// hidden activation after its linear layer in 2 rounds after the product instead of 3.
pub fn quad_raw(p: &mut Party, raw: &Share, shift: u32) -> Result<Share, ChannelError> {
    let (mut t, mut sq) = truncate_mul(p, &[(raw, shift)], &[(Operand::t(0), Operand::t(0))])?;
    quad_from_square(p, &t.pop().expect("one truncation"), &sq.pop().expect("one product"))
}

/// (x² + 2x + 4)/8 from x and its untruncated square: one truncation by f + 3.
fn quad_from_square(p: &mut Party, x: &Share, sq: &Share) -> Result<Share, ChannelError> {
    let f = x.frac;
    let lin = x.ring.scale(2u64.wrapping_shl(f));
    let four = p.public_term(4u64 << (2 * f));
    let z = Share { ring: sq.ring.add(&lin).add_scalar(four), frac: 2 * f + 3 };
    truncate(p, &z, f + 3)
}

use super::compare::{ge_thresholds, inject_many};
use super::fused::{truncate_mul, truncate_mul_pow, Operand, PowProduct};
use super::protocol::mul_raw;
use super::ring::RingTensor;

/// 1/x for shared positive x (|x·2^f| < 2^62), by normalisation and Newton–Raphson (the SPU
/// approach; CrypTen's unnormalised NR with a fixed initial guess diverges beyond x ≈ 253):
/// 1. `normalise` (4 rounds): the one-hot leading bit k of x, c = 2^(61−k) and the products
///    x·c, slope·x·c, with d = 2^(f−k)-style per-position constants as shares;
/// 2. u = x·c / 2^(61−f) ∈ [1, 2) at scale f (x·c ∈ [2^61, 2^62) stays inside the
///    truncation's |v| < 2^62 domain), and w₀ = 24/17 − (8/17)·u (the minimax line on [1, 2),
///    relative error ≤ 1/17);
/// 3. two NR steps w ← 2w − u·w² (relative error 5.9% → 0.35% → 1.2e−5, below the ulp 2^−16
///    of a result ≤ 1), each one round: u·w² is a power product of the freshly truncated w
///    (`fused::truncate_mul_pow`), formed at scale 3f (≤ 2^60 for f ≤ 20) in the truncation's
///    round, and 2w − u·w² is truncated by 2f in the next;
/// 4. 1/x = w·2^(f−k) = w·d / 2^f.
///
/// Rounds: [trunc u, w₀; u·w₀²] [trunc w₁; u·w₁²] [trunc w₂; w₂·d] [trunc] — 8 in all with
/// the normalisation. x must be positive; x = 0 gives 0 (or one ulp), and results below 2^−f
/// round to 0 or one ulp.
pub fn reciprocal(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    reciprocal_ext(p, x, 0)
}

/// 1/x at scale f + s (s extra fractional bits): the result keeps ~16 significant bits even when
/// it is small (1/Σ over a long row would otherwise be a handful of ulps at scale f). Any
/// positive x with 2f + s ≤ 61 (the result, ≤ 2^(2f+s) in the ring, is representable; the
/// final products are split so that none passes the truncation's 2^62 bound). Same 8 rounds.
pub fn reciprocal_ext(p: &mut Party, x: &Share, s: u32) -> Result<Share, ChannelError> {
    reciprocal_ext_to(p, x, s, x.frac)
}

/// [`reciprocal_ext`] for x at any scale x.frac (e.g. an untruncated sum of squares at 2f),
/// with the result at scale `f` + s: the input scale only enters the per-position constants.
pub fn reciprocal_ext_to(p: &mut Party, x: &Share, s: u32, f: u32) -> Result<Share, ChannelError> {
    let fin = x.frac;
    assert!(2 * f + s <= 61 && 3 * f <= 60 && fin < 62, "reciprocal: scale {f} + {s} too large");
    // 1/x = w·2^(fin−k), i.e. w's ring value times 2^(fin+s−k) at scale f + s. For k ≤ fin + s
    // that is an integer multiplier (d_hi, no truncation); above, d_lo = 2^(fin+f+s−k) and one
    // truncation by f. One factor 2^(fin+f+s−k) for all k would put w·d at 2^(f+fin+f+s−k),
    // past the truncation's 2^62 bound for tiny x once 3f + s > 61 (f ≥ 18 with s = 8).
    let hi = |k: u32| if k <= fin + s { 1u64 << (fin + s - k) } else { 0 };
    let lo = |k: u32| if k > fin + s && k <= fin + f + s { 1u64 << (fin + f + s - k) } else { 0 };
    let (xc, w0, mut ds) = normalise(p, x, &[(24.0 / 17.0, 8.0 / 17.0)], &[&hi, &lo])?;
    let d_lo = ds.pop().expect("two factors");
    let d_hi = ds.pop().expect("two factors");
    let square = |a| PowProduct { a, b: 0, k: 2 };
    let (mut t, _, mut uw2) = truncate_mul_pow(p, &[(&w0, 61 - f), (&xc, 61 - f)], &[], &[square(Operand::t(1))])?;
    let u = t.pop().expect("two truncations");
    let mut w = t.pop().expect("two truncations");
    // Each step: 2w − u·w² at scale 3f (≤ 2^60: w ≤ 1/u ≤ 1 after the first step, w₀ < 0.95),
    // truncated by 2f in the round of the next product of the new w.
    for step in 0..2 {
        let z = Share { ring: w.ring.scale(2u64 << (2 * f)).sub(&uw2.pop().expect("one power product").ring), frac: 3 * f };
        if step == 0 {
            let (mut tw, _, pw) = truncate_mul_pow(p, &[(&z, 2 * f)], &[], &[square(Operand::Ready(&u))])?;
            w = tw.pop().expect("one truncation");
            uw2 = pw;
        } else {
            let next = [(Operand::Ready(&d_hi), Operand::t(0)), (Operand::Ready(&d_lo), Operand::t(0))];
            let (_, mut pr) = truncate_mul(p, &[(&z, 2 * f)], &next)?;
            let wd_lo = pr.pop().expect("two products");
            let wd_hi = pr.pop().expect("two products");
            let low = truncate(p, &Share { ring: wd_lo.ring, frac: f + f }, f)?;
            return Ok(Share { ring: wd_hi.ring.add(&low.ring), frac: f + s });
        }
    }
    unreachable!("the second step returns")
}

/// Leading-bit normalisation of a positive x (|x| < 2^62 as a ring value), 4 rounds, without
/// the final truncation (the caller fuses it with its first product): returns x·c and the
/// linear initial guess y₀·2^61 = aⱼ·2^61 − bⱼ·x·c, both at scale 61 with c = 2^(61−k) for
/// x's leading bit k — truncated by 61 − f they are u ∈ [1, 2) at scale f with x = u·2^k
/// (ring value) and y₀ = aⱼ − bⱼ·u — and Σᵢ [k = i]·factor(i) as shares (public
/// per-position constants combined with the one-hot leading bit; each `factor` is an encoded
/// ring value, returned at nominal scale x.frac).
///
/// `guess` holds one line (aⱼ, bⱼ) per segment j of [1, 2) (S = `guess.len()` equal parts):
/// the segment of u comes from the same comparisons as k, with thresholds ⌈2^k·(1 + j/S)⌉, so
/// a piecewise-linear initial guess costs comparisons, not rounds (each line must give
/// 0 < y₀ < 2 on its segment, so that y₀·2^61 stays inside the truncation's domain). bⱼ·u keeps ≥ 16
/// significant bits while x < 2^44 (its per-position constants are round(bⱼ·2^(61−k))).
///
/// Rounds: the thermometer code [x ≥ tᵢ] over all 62·S thresholds (`ge_thresholds`, one
/// opening for all, 3 rounds), then the one-hot bits and their products with x in one round
/// (`inject_many`).
fn normalise(
    p: &mut Party,
    x: &Share,
    guess: &[(f64, f64)],
    factors: &[&dyn Fn(u32) -> u64],
) -> Result<(Share, Share, Vec<Share>), ChannelError> {
    let n = x.ring.len();
    let shape = x.ring.shape.clone();
    let segs = guess.len();
    // Thresholds in increasing order: position-major, segment-minor.
    let per = 62 * segs;
    let ts: Vec<u64> = (0..per)
        .map(|t| {
            let (k, j) = ((t / segs) as u32, (t % segs) as u64);
            (1u64 << k) + (j << k).div_ceil(segs as u64)
        })
        .collect();
    let ge = ge_thresholds(p, &Share { ring: x.ring.clone(), frac: 0 }, &ts)?;
    // One-hot over (k, j): [x ≥ tₜ] ⊕ [x ≥ tₜ₊₁] (empty segments of tiny k, with equal
    // thresholds, get 0).
    let h: Vec<u64> = (0..n * per).map(|q| if q % per == per - 1 { ge[q] } else { ge[q] ^ ge[q + 1] }).collect();
    let (a, ax) = inject_many(p, &h, &x.ring.data, per)?;
    let mut c = vec![0u64; n];
    let mut y0 = vec![0u64; n];
    let mut d = vec![vec![0u64; n]; factors.len()];
    let consts: Vec<(u64, u64, u64)> = (0..per)
        .map(|t| {
            let (k, j) = ((t / segs) as i32, t % segs);
            let (aj, bj) = guess[j];
            (1u64 << (61 - k), (aj * 2f64.powi(61)).round() as u64, (bj * 2f64.powi(61 - k)).round() as u64)
        })
        .collect();
    for e in 0..n {
        for (t, &(ck, ak, bk)) in consts.iter().enumerate() {
            let (bit, bx) = (a[e * per + t], ax[e * per + t]);
            c[e] = c[e].wrapping_add(bx.wrapping_mul(ck));
            y0[e] = y0[e].wrapping_add(bit.wrapping_mul(ak)).wrapping_sub(bx.wrapping_mul(bk));
            for (dj, factor) in d.iter_mut().zip(factors) {
                dj[e] = dj[e].wrapping_add(bit.wrapping_mul(factor((t / segs) as u32)));
            }
        }
    }
    // x·c ∈ [2^61, 2^62) and y₀·2^61 ∈ (0, 2^62): inside the truncation's domain.
    Ok((
        Share { ring: RingTensor::new(&shape, c), frac: 61 },
        Share { ring: RingTensor::new(&shape, y0), frac: 61 },
        d.into_iter().map(|dj| Share { ring: RingTensor::new(&shape, dj), frac: x.frac }).collect(),
    ))
}

/// 1/√x for shared positive x, by the same normalisation: x = u·2^(k−f), u ∈ [1, 2), so
/// 1/√x = (1/√u)·2^(−(k−f)/2), the second factor a public constant per leading-bit position.
/// y₀ = 1.2740 − 0.2929·u (the chord of 1/√u on [1, 2) lowered by half its largest gap:
/// relative error ≤ 2.7%), then two Newton steps y ← (3y − u·y³)/2 (2.7% → 1.1e−3 → 2e−6,
/// below the output resolution at 18 fractional bits), one round each (see `rsqrt_parts`).
/// 4 + 3 + 1 = 8 rounds.
///
/// A piecewise-linear guess on eight segments of [1, 2) (`normalise` takes one line per
/// segment; the segment costs 8 comparisons per position instead of 1, no rounds) reaches
/// 6.7e−4 and would save one more Newton step, but on BERT-base it added as many bytes as it
/// saved rounds (−48 rounds, +25 MB per party at seq 128; +8 MB, +14%, on BERT-mini, measured
/// with the earlier two-round steps): a wash on the WAN profile and a loss on the LAN one, so
/// the single line stays.
pub fn rsqrt(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    rsqrt_scaled(p, x, 1.0)
}

/// c/√x for a public c > 0 (folded into the per-leading-bit constants: no extra round).
pub fn rsqrt_scaled(p: &mut Party, x: &Share, c: f64) -> Result<Share, ChannelError> {
    let f = x.frac;
    let (_, yd) = rsqrt_parts(p, x, f, c, None)?;
    truncate(p, &yd, f)
}

/// v ∘ (c/√x) per row at scale `f`, for positive x [rows] at any scale below 62 (e.g. an
/// untruncated sum of squares at 2f: the scale only enters the per-position constants) and
/// v [rows, l] at any scale ≥ f (untruncated is best: its truncation is fused into the first
/// Newton round): v·d (d the per-leading-bit constant) is formed and truncated inside the
/// Newton iterations' rounds, and its product with the converged 1/√u in the last
/// truncation's round; one more round truncates it. LayerNorm's (x − μ)·γ / √(σ² + ε).
/// |v·d| and |v·c/√x| must stay below 2^(62 − 2f) in real terms. 8 rounds.
pub fn rsqrt_scaled_times(p: &mut Party, x: &Share, f: u32, c: f64, v: &Share) -> Result<Share, ChannelError> {
    let (_, z) = rsqrt_parts(p, x, f, c, Some(v))?;
    truncate(p, &z, f)
}

/// Scale of the iterate y in `rsqrt_parts`' cubes: u·y³ sits at f + 3g, which must stay
/// below 2^61 with u·y³ < 1 and (3y − u·y³)/2 ≤ 1 one bit higher; 14 at f = 18, 13 at f = 20.
fn rsqrt_cube_scale(f: u32) -> u32 {
    f.min((60 - f) / 3)
}

/// The shared part of `rsqrt_scaled` and `rsqrt_scaled_times`, 7 rounds: normalisation (4),
/// then three rounds, each truncation fused with the products of its output:
/// [trunc u, y₀ (and v); u·y₀³ (and v·d)] [trunc y₁; u·y₁³] [trunc y₂ (and v·d); y₂·d or (v·d)·y₂].
/// Each Newton step y ← (3y − u·y³)/2 is one round: u·y³ is a power product of the freshly
/// truncated y (`fused::truncate_mul_pow`). The iterates enter it at a coarser scale g
/// (`rsqrt_cube_scale`, 2^−14 at f = 18), both in 3y and in u·y³: the Newton map's derivative
/// vanishes at its fixed point, so that rounding is squared away with the iterate's own error
/// (1.1e−3 + 6e−5 before the last step, 2e−6 after it); u stays at scale f.
/// x is at any scale (only the per-position constants see it); the work and the result are at
/// scale f. An untruncated `v` (scale > f) is truncated in the first Newton round, and its
/// products with the per-row d and y₂ take truncation outputs of their own round (a wide
/// product and a broadcast truncation pair, `fused`), so v's elements are never opened — only
/// truncated, twice. Returns 1/√u and the untruncated product (scale 2f) of it with d, or with
/// trunc(v ∘ d) per row when `v` is given.
fn rsqrt_parts(p: &mut Party, x: &Share, f: u32, c: f64, v: Option<&Share>) -> Result<(Share, Share), ChannelError> {
    let fx = x.frac;
    assert!(fx < 62 && 3 * f <= 60, "rsqrt: input scale {fx}, working scale {f}");
    let g = rsqrt_cube_scale(f);
    let hi = f + 3 * g;
    let factor = |k: u32| super::fixed::encode(c * rsqrt_factor(k as i32 - fx as i32), f);
    let (xc, y0, mut ds) = normalise(p, x, &[(1.2740, 0.2929)], &[&factor])?;
    let mut d = ds.pop().expect("one factor");
    d.frac = f;
    let cube = |a| PowProduct { a, b: 0, k: 3 };
    // [trunc y₀ (to g), u (to f) (and v to f); u·y₀³ (and v·d, d per row)]
    let mut tr: Vec<(&Share, u32)> = vec![(&y0, 61 - g), (&xc, 61 - f)];
    let vd_prod = match v {
        Some(v) if v.frac > f => {
            tr.push((v, v.frac - f));
            vec![(Operand::t(2), Operand::Ready(&d))]
        }
        Some(v) => vec![(Operand::Ready(v), Operand::Ready(&d))],
        None => vec![],
    };
    let (mut t, mut pr, mut uy3) = truncate_mul_pow(p, &tr, &vd_prod, &[cube(Operand::t(1))])?;
    t.truncate(2);
    let u = t.pop().expect("two truncations");
    let mut y = t.pop().expect("two truncations");
    let vd_raw = pr.pop();
    // (3y − u·y³)/2 at scale hi + 1: 3y at g brought to hi, the halving folded into the scale.
    let newton = |y: &Share, uy3: Share| Share { ring: y.ring.scale(3u64 << (hi - g)).sub(&uy3.ring), frac: hi + 1 };
    let z1 = newton(&y, uy3.pop().expect("one power product"));
    // [trunc y₁ (to g); u·y₁³]
    let (mut t, _, mut uy3) = truncate_mul_pow(p, &[(&z1, hi + 1 - g)], &[], &[cube(Operand::Ready(&u))])?;
    y = t.pop().expect("one truncation");
    let z2 = newton(&y, uy3.pop().expect("one power product"));
    // [trunc y₂ (to f) (and v·d to f); y₂·d, or (v·d)·y₂ with y₂ per row — both truncation
    // outputs of this round, so nothing per element is opened]
    let (mut ty, mut pr) = match &vd_raw {
        Some(vd) => truncate_mul(p, &[(&z2, hi + 1 - f), (vd, vd.frac - f)], &[(Operand::t(1), Operand::t(0))])?,
        None => truncate_mul(p, &[(&z2, hi + 1 - f)], &[(Operand::Ready(&d), Operand::t(0))])?,
    };
    let mut out = pr.pop().expect("one product");
    out.frac = 2 * f;
    ty.truncate(1);
    Ok((ty.pop().expect("one truncation"), out))
}

/// Sum over the last axis (local), [rows, L] → [rows].
pub(crate) fn row_sums(x: &Share) -> Share {
    let l = *x.ring.shape.last().expect("rank ≥ 1");
    let rows = x.ring.len() / l.max(1);
    let sums = (0..rows).map(|r| x.ring.data[r * l..(r + 1) * l].iter().fold(0u64, |a, &b| a.wrapping_add(b))).collect();
    Share { ring: RingTensor::new(&[rows], sums), frac: x.frac }
}

/// Repeat each row value L times, [rows] → [rows, L] (local).
pub(crate) fn broadcast_rows(x: &Share, shape: &[usize]) -> Share {
    let l = *shape.last().expect("rank ≥ 1");
    let data = x.ring.data.iter().flat_map(|&v| std::iter::repeat_n(v, l)).collect();
    Share { ring: RingTensor::new(shape, data), frac: x.frac }
}

/// Normalise non-negative row values q by their row sums, q / Σq, with 1/Σq at s extra bits
/// and one row-broadcast product (10 rounds: reciprocal 8, product 2). q may be at a higher
/// scale than `out_frac` (an untruncated square): the reciprocal takes the row sums at q's
/// scale as they are, and the final truncation takes q·(1/Σq) ≤ 1 straight to `out_frac`.
///
/// The product q·(1/Σq) ≤ 1 sits at scale q.frac + out_frac + s and must stay below the
/// truncation's 2^62 bound; when it would not (an untruncated square at f ≥ 20: 3f + s ≥ 62),
/// q is truncated to `out_frac` first (one more round).
fn normalise_rows(p: &mut Party, q: &Share, s: u32, out_frac: u32) -> Result<Share, ChannelError> {
    let mut q = q.clone();
    if q.frac > out_frac && q.frac + out_frac + s > 61 {
        q = truncate(p, &q, q.frac - out_frac)?;
    }
    let inv = reciprocal_ext_to(p, &row_sums(&q), s, out_frac)?;
    let z = super::protocol::mul_rows_raw(p, &q, &inv)?;
    truncate(p, &z, z.frac - out_frac)
}

/// Extra bits of 1/Σq in 2Quad: q·(1/Σq) sits at 3f + extra bits, 8 extra while that fits
/// below 2^62 (f ≤ 17), fewer at f = 18, 19 (7, 4: still ≥ 24 bits of scale for 1/Σq, as
/// 16 + 8), and from f = 20 q is truncated before the normalisation instead.
fn two_quad_extra(f: u32) -> u32 {
    if 3 * f + 8 <= 61 {
        8
    } else if 3 * f + 4 <= 61 {
        61 - 3 * f
    } else {
        8
    }
}

/// MPCFormer's 2Quad over the last axis: (s + c)² / Σ (s + c)², for unpadded rows (batch-1
/// private inference has no padding keys). The square stays untruncated at scale 2f and is
/// normalised there (`normalise_rows`). 11 rounds: square 1, normalisation 10 (reciprocal 8,
/// product 2).
pub fn two_quad(p: &mut Party, s: &Share, c: f64) -> Result<Share, ChannelError> {
    let shift = p.public_term(super::fixed::encode(c, s.frac));
    let q = super::protocol::square_raw(p, &Share { ring: s.ring.add_scalar(shift), frac: s.frac })?;
    normalise_rows(p, &q, two_quad_extra(s.frac), s.frac)
}

/// MPCFormer's 2ReLU over the last axis, (relu(s) + ε/L) / (Σ relu(s) + ε), with ε = one ulp
/// (2^−f; MPCFormer's 1e−12 is below the resolution): a row without a positive score becomes
/// uniform 1/L exactly as in the plaintext model, other rows are relu(s)/Σ within fixed point.
/// With inv = 1/(Σ relu + ε) (at f + 8 bits) the numerator's ε/L·inv is inv_ring/L at the
/// product's scale, added at 20 extra bits and removed by the product's single truncation. 14 rounds (relu 4, reciprocal 8, product 2).
pub fn two_relu(p: &mut Party, s: &Share) -> Result<Share, ChannelError> {
    let f = s.frac;
    let r = super::compare::relu(p, s)?;
    let l = *s.ring.shape.last().expect("rank ≥ 1");
    let sums = row_sums(&r);
    let eps = p.public_term(1);
    // 1/(Σ + ε) at 8 extra bits (≤ 2^(f+8) real·2^(f+8) = 2^40 in the ring).
    let inv = reciprocal_ext(p, &Share { ring: sums.ring.add_scalar(eps), frac: f }, 8)?;
    let invb = broadcast_rows(&inv, &r.ring.shape);
    let q = super::protocol::mul_rows_raw(p, &r, &inv)?;
    // As many extra bits as the truncation's 2^62 bound leaves above q's scale 2f + 8 (20 at
    // f ≤ 16, 13 at f = 20): q·2^EXTRA ≤ 2^(2f + 8 + EXTRA) must stay below 2^62.
    let extra: u32 = 20u32.min(61 - q.frac);
    let k = ((1u64 << extra) as f64 / l as f64).round() as u64;
    let z = q.ring.scale(1u64 << extra).add(&invb.ring.scale(k));
    truncate(p, &Share { ring: z, frac: q.frac + extra }, q.frac + extra - f)
}

// ---------------------------------------------------------------------------------------------
// Exact-model nonlinearities: exp (for softmax with max subtraction), softmax, GeLU, tanh.
// ---------------------------------------------------------------------------------------------

use super::compare::{bit_mul_many, ge_zero_bits, tournament_select};
use super::dealer::TOURNAMENT_MAX_K;
use super::fixed::encode;
use super::protocol::truncate_many;

/// Several elementwise Beaver products in one round (one triple, one opening), untruncated.
pub fn mul_many_raw(p: &mut Party, pairs: &[(&Share, &Share)]) -> Result<Vec<Share>, ChannelError> {
    if pairs.is_empty() {
        return Ok(vec![]);
    }
    let xs: Vec<&Share> = pairs.iter().map(|pr| pr.0).collect();
    let ys: Vec<&Share> = pairs.iter().map(|pr| pr.1).collect();
    let (x, y) = (concat(&xs), concat(&ys));
    assert!(pairs.iter().all(|(a, b)| a.frac == x.frac && b.frac == y.frac && a.ring.len() == b.ring.len()));
    let z = mul_raw(p, &x, &y)?;
    let mut off = 0;
    Ok(pairs
        .iter()
        .map(|(a, _)| {
            let n = a.ring.len();
            let s = Share { ring: RingTensor::new(&a.ring.shape, z.ring.data[off..off + n].to_vec()), frac: z.frac };
            off += n;
            s
        })
        .collect())
}

fn concat(xs: &[&Share]) -> Share {
    let data: Vec<u64> = xs.iter().flat_map(|x| x.ring.data.iter().copied()).collect();
    Share { ring: RingTensor::new(&[data.len()], data), frac: xs[0].frac }
}

fn split(x: &RingTensor, parts: usize) -> Vec<RingTensor> {
    let n = x.len() / parts;
    (0..parts).map(|i| RingTensor::new(&[n], x.data[i * n..(i + 1) * n].to_vec())).collect()
}

/// Internal scale of exp: its squarings keep values ≤ 2, so (2·2^29)² < 2^62 stays inside the
/// truncation's domain.
const EXP_SCALE: u32 = 29;
/// exp is clipped below at −EXP_CLIP: e^−16 ≈ 1.1e−7 is far below the ulp 2^−16 ≈ 1.5e−5, so
/// the clipped tail is 0 in the output encoding anyway.
pub const EXP_CLIP: f64 = 16.0;
/// exp(x) = p(x/2^k)^(2^k).
const EXP_HALVINGS: u32 = 5;

/// e^x for shared x ≤ 0 (any ring value with |x| < 2^46 — including masks of −10⁴ and beyond;
/// CrypTen's limit method turns garbage below −256), at x's scale, in 13 rounds:
/// 1. clip: x_c = relu(x + 16) − 16 (4 rounds), so x_c ∈ [−16, 0];
/// 2. t = x_c/32 ∈ [−0.5, 0] at 29 fractional bits (a local shift);
/// 3. 2·p(t) = 2 + 2t + t² + t³/3 (2p to keep every term exact at one scale; 3 rounds, the
///    truncation of t² fused with t²·t/3), p the cubic Taylor polynomial of e^t;
/// 4. five squarings (6 rounds, each truncation fused with the next square): the first divides
///    by 4 (undoing 2p) and the last truncates straight back to x's scale.
///
/// Error: relative t⁴/24·2^k from the polynomial, i.e. absolute ≤ e^x·x⁴/(24·2^15) ≤ 6e−6 over
/// [−16, 0] (largest near x = −4), below one ulp at 16 fractional bits; plus up to 1.3 ulp from
/// the truncations (the last one dominates). For x < −16 the result is e^−16.5 ≈ 7e−8, i.e. 0 after encoding.
pub fn exp_neg(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let f = x.frac;
    assert!(f + EXP_HALVINGS <= EXP_SCALE, "exp: scale {f} too large");
    let clip = p.public_term(encode(EXP_CLIP, f));
    let r = super::compare::relu(p, &Share { ring: x.ring.add_scalar(clip), frac: f })?;
    let xc = r.ring.add_scalar(clip.wrapping_neg());
    let e = EXP_SCALE;
    let t = Share { ring: xc.map(|v| v << (e - f - EXP_HALVINGS)), frac: e };
    let sq = super::protocol::square_raw(p, &t)?;
    let third = Share { ring: t.ring.scale(encode(1.0 / 3.0, e)), frac: 2 * e };
    // [trunc t², t/3; t²·t/3]
    let (tr, mut t3raw) = truncate_mul(p, &[(&sq, e), (&third, e)], &[(Operand::t(0), Operand::t(1))])?;
    let t3 = truncate(p, &t3raw.pop().expect("one product"), e)?;
    let two = p.public_term(encode(2.0, e));
    let y = Share { ring: t.ring.scale(2).add(&tr[0].ring).add(&t3.ring).add_scalar(two), frac: e };
    // Five squarings, each truncation fused with the next square: the first divides by 4
    // (undoing 2p: its input relabelled at scale 2e + 2), the last returns to x's scale.
    let mut s = super::protocol::square_raw(p, &y)?;
    for i in 0..EXP_HALVINGS {
        if i + 1 == EXP_HALVINGS {
            return truncate(p, &s, 2 * e - f);
        }
        let (s_in, shift) = if i == 0 { (Share { ring: s.ring, frac: 2 * e + 2 }, e + 2) } else { (s, e) };
        let (_, mut pr) = truncate_mul(p, &[(&s_in, shift)], &[(Operand::t(0), Operand::t(0))])?;
        s = pr.pop().expect("one product");
    }
    unreachable!("the last squaring returns")
}

/// Fan-in of each step of `row_max` over w values: groups of 4 while more than
/// [`TOURNAMENT_MAX_K`] remain, then all the rest at once (the dealer's material per group grows
/// as k·2^k, so the wide groups come last, where few values are left). L = 128: 4, 4, 8.
pub fn row_max_fan_ins(mut w: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while w > 1 {
        let k = if w <= TOURNAMENT_MAX_K { w } else { 4 };
        out.push(k);
        w = w.div_ceil(k);
    }
    out
}

/// Filler for the last group of a row whose width the fan-in does not divide: a public value
/// below every score (values must satisfy |x| < 2^60 as ring integers, so x − PAD stays
/// inside the comparison's signed range); a real member always beats it.
const MAX_PAD: u64 = (1u64 << 61).wrapping_neg();

/// Row maxima of x [rows, L] → [rows], exact: a tournament tree whose every step compares
/// all pairs of each group of k (sign bits, 3 rounds) and selects the winner with a fan-in-k
/// AND fused into the bit injection (`compare::tournament_select`, 1 round). 4 rounds per
/// step, `row_max_fan_ins(L).len()` steps: L = 128 in 3 (12 rounds; a pairwise tree needs 7
/// steps, 28 rounds), L = 512 in 4. The price is comparisons: k(k−1)/2 per k values instead
/// of k − 1 (twice as many at fan-in 4), cheap next to the rounds saved.
pub fn row_max(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let (rows, mut w) = (x.ring.shape[0], x.ring.shape[1]);
    let mut cur = x.ring.data.clone();
    let pad = p.public_term(MAX_PAD);
    for k in row_max_fan_ins(w) {
        let groups = w.div_ceil(k);
        let mut vals = Vec::with_capacity(rows * groups * k);
        for r in 0..rows {
            vals.extend_from_slice(&cur[r * w..(r + 1) * w]);
            vals.resize(vals.len() + groups * k - w, pad);
        }
        // Pairs (a, b), a < b, in `pair_index` order.
        let mut diffs = Vec::with_capacity(rows * groups * k * (k - 1) / 2);
        for g in vals.chunks(k) {
            for a in 0..k {
                for b in a + 1..k {
                    diffs.push(g[a].wrapping_sub(g[b]));
                }
            }
        }
        let n = diffs.len();
        let bits = ge_zero_bits(p, &Share { ring: RingTensor::new(&[n], diffs), frac: x.frac })?;
        cur = tournament_select(p, &vals, &bits.data, k)?;
        w = groups;
    }
    Ok(Share { ring: RingTensor::new(&[rows], cur), frac: x.frac })
}

/// Softmax over the last axis with max subtraction: m = row max, e = exp(x − m) (x − m ≤ 0, the
/// largest term is e⁰ = 1, so Σe ∈ [1, L]), out = e·(1/Σe). Rounds: 5·(tournament steps) + 14 + 9 + 2
/// (L = 128: 40). Unpadded rows (batch-1 private inference).
pub fn softmax(p: &mut Party, s: &Share) -> Result<Share, ChannelError> {
    let m = row_max(p, s)?;
    let d = Share { ring: s.ring.sub(&broadcast_rows(&m, &s.ring.shape).ring), frac: s.frac };
    let e = exp_neg(p, &d)?;
    // Σe ≥ 1, so 1/Σe can carry 16 extra bits.
    normalise_rows(p, &e, 16, e.frac)
}

/// Internal scale of the polynomial powers (|u| ≤ 1 inside the fitted interval).
const POLY_SCALE: u32 = 30;
/// Scale of the public polynomial coefficients.
const COEFF_SCALE: u32 = 20;

/// Even and odd parts of c₀ + c₁u + … + c_d·u^d with u = x/s, at x's scale: the powers of u are
/// computed at 30 fractional bits in ⌈log₂ d⌉ levels (one batched product and one batched
/// truncation each), the public coefficients applied locally and both parts truncated together.
/// Rounds: 2⌈log₂ d⌉ + 1, plus 1 when 2^(30−f)/s is not an integer (then u needs a truncation).
/// Outside |x| ≤ s the values are meaningless; callers multiply them by 0 there.
fn poly_parts(p: &mut Party, x: &Share, coeffs: &[f64], s: f64) -> Result<(Share, Share), ChannelError> {
    let f = x.frac;
    let e = POLY_SCALE;
    assert!(f < e && coeffs.len() >= 2, "poly: scale {f}, {} coefficients", coeffs.len());
    let k = 2f64.powi((e - f) as i32) / s;
    let u = if k.fract() == 0.0 {
        Share { ring: x.ring.scale(k as u64), frac: e }
    } else {
        truncate(p, &Share { ring: x.ring.scale(encode(1.0 / s, e)), frac: f + e }, f)?
    };
    let d = coeffs.len() - 1;
    let mut pw: Vec<Share> = vec![u.clone(), u];
    while pw.len() <= d {
        let have = pw.len() - 1;
        let top = (2 * have).min(d);
        let pairs: Vec<(&Share, &Share)> = (have + 1..=top).map(|j| (&pw[have], &pw[j - have])).collect();
        let raw = mul_many_raw(p, &pairs)?;
        pw.extend(truncate_many(p, &raw, e)?);
    }
    // Coefficients at 20 fractional bits (not f), so their rounding stays far below an ulp of
    // the result; the parts stay below 2^62 (|E|, |O| ≤ Σ|cₖ| < 2^12 at scale 30 + 20).
    let g = COEFF_SCALE;
    let mut even = RingTensor::zeros(&x.ring.shape);
    let mut odd = RingTensor::zeros(&x.ring.shape);
    for (k, &c) in coeffs.iter().enumerate().skip(1) {
        let term = pw[k].ring.scale(encode(c, g));
        if k % 2 == 0 {
            even = even.add(&term);
        } else {
            odd = odd.add(&term);
        }
    }
    let even = even.add_scalar(p.public_term(encode(coeffs[0], e + g)));
    let out = truncate_many(p, &[Share { ring: even, frac: e + g }, Share { ring: odd, frac: e + g }], e + g - f)?;
    let mut it = out.into_iter();
    let (ev, od) = (it.next().expect("two parts"), it.next().expect("two parts"));
    Ok((ev, od))
}

/// Which GeLU (config `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeluForm {
    /// x·Φ(x) (HF "gelu").
    Erf,
    /// 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))) (HF "gelu_new").
    Tanh,
}

/// GeLU's tail cut-off: beyond ±4 GeLU is x or 0 within 1.3e−4.
pub const GELU_T: f64 = 4.0;
/// h(a) = a − GeLU(a) = a·Φ(−a) on [0, 4], in powers of a/4: degree-8 near-minimax fit
/// (Lawson's iteratively reweighted least squares on 6000 points); max error 1.1e−4.
pub const GELU_ERF_H: [f64; 9] = [
    1.111600483344e-4, 1.980877283996e0, -5.844254503896e0, -5.766704243372e0, 4.701395635048e1,
    -8.167288372834e1, 6.647617053819e1, -2.594053310177e1, 3.753275607323e0,
];
/// The same for the tanh form (max error 1.0e−4).
pub const GELU_TANH_H: [f64; 9] = [
    9.964699236005e-5, 1.982567413044e0, -5.883478649008e0, -5.441834898605e0, 4.593826297693e1,
    -8.004698871116e1, 6.537239699232e1, -2.571126104343e1, 3.790206714004e0,
];
/// Non-negative knots of the piecewise-linear tanh in units of 1/64, up to 8 (tanh(8) =
/// 1 − 2.3e−7; ±1 beyond). Each is the farthest multiple of 1/64 whose chord from the previous
/// knot stays within 2.3e−5 of tanh (greedy, from 0): steps of 1/64 where |tanh''| is large,
/// up to 116/64 at the tail. Fixed integers, so both parties build the same table whatever their
/// libm.
const TANH_KNOTS_64: [u16; 151] = [
    0, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
    29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,
    53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76,
    77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100,
    101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 118, 120, 122,
    124, 126, 128, 130, 132, 134, 136, 138, 140, 142, 144, 147, 150, 153, 156, 159, 162, 166, 170,
    174, 178, 183, 188, 194, 200, 207, 215, 224, 235, 248, 264, 286, 320, 396, 512
];

/// 2^(−e/2) from exact powers of two and the literal √2 (no `powf`: see the module docs).
fn rsqrt_factor(e: i32) -> f64 {
    let half = 2f64.powi(-e.div_euclid(2));
    if e.rem_euclid(2) == 0 {
        half
    } else {
        half * std::f64::consts::FRAC_1_SQRT_2
    }
}

/// tanh(k/64) for an integer k, from basic operations only, so that every party computes the
/// same bits whatever its libm: e = exp(−1/32)^|k| (the series of exp(−1/32) to 17 terms, then
/// square-and-multiply in a fixed order), tanh = (1 − e)/(1 + e) with the sign of k.
/// Accurate to a few ulps, far below the chords' 2.3e−5.
fn det_tanh(k: i32) -> f64 {
    let base = {
        let (mut term, mut sum) = (1.0f64, 1.0f64);
        for n in 1..=17 {
            term = term * (-1.0 / 32.0) / n as f64;
            sum += term;
        }
        sum
    };
    let (mut e, mut b, mut m) = (1.0f64, base, k.unsigned_abs());
    while m > 0 {
        if m & 1 == 1 {
            e *= b;
        }
        b *= b;
        m >>= 1;
    }
    let t = (1.0 - e) / (1.0 + e);
    if k < 0 {
        -t
    } else {
        t
    }
}

/// All knots, symmetric about 0 (301), in increasing order.
pub fn tanh_knots() -> Vec<f64> {
    let pos = TANH_KNOTS_64.iter().map(|&k| k as f64 / 64.0);
    let mut k: Vec<f64> = pos.clone().skip(1).rev().map(|x| -x).collect();
    k.extend(pos);
    k
}

/// (intercept, slope) of each segment: below the first knot, the chords between knots, above
/// the last knot.
fn tanh_segments() -> Vec<(f64, f64)> {
    let k = tanh_knots();
    let mut seg = vec![(-1.0, 0.0)];
    for w in k.windows(2) {
        // Knots are multiples of 1/64 (exact in f64).
        let (t0, t1) = (det_tanh((w[0] * 64.0) as i32), det_tanh((w[1] * 64.0) as i32));
        let b = (t1 - t0) / (w[1] - w[0]);
        seg.push((t0 - b * w[0], b));
    }
    seg.push((1.0, 0.0));
    seg
}

/// Evaluate a polynomial in |x|/s (plaintext f64; the reference the protocols are tested against).
pub fn poly_abs(coeffs: &[f64], s: f64, x: f64) -> f64 {
    let u = x.abs() / s;
    coeffs.iter().rev().fold(0.0, |acc, &c| acc * u + c)
}

/// Plaintext twin of [`gelu`]: the same piecewise function in f64.
pub fn gelu_reference(form: GeluForm, x: f64) -> f64 {
    let h = match form {
        GeluForm::Erf => &GELU_ERF_H[..],
        GeluForm::Tanh => &GELU_TANH_H[..],
    };
    if x >= GELU_T {
        x
    } else if x < -GELU_T {
        0.0
    } else {
        x.max(0.0) - poly_abs(h, GELU_T, x)
    }
}

/// Plaintext twin of [`tanh`]: the chords between [`tanh_knots`], ±1 beyond (max error
/// 2.3e−5 from tanh).
pub fn tanh_reference(x: f64) -> f64 {
    static TABLE: std::sync::OnceLock<(Vec<f64>, Vec<(f64, f64)>)> = std::sync::OnceLock::new();
    let (k, seg) = TABLE.get_or_init(|| (tanh_knots(), tanh_segments()));
    let (a, b) = seg[k.partition_point(|&t| t <= x)];
    a + b * x
}

/// Three sign tests in one comparison batch: XOR bits of [x ≥ 0], [x ≥ T], [x ≥ −T].
fn three_bits(p: &mut Party, x: &Share, t: f64) -> Result<Vec<RingTensor>, ChannelError> {
    let tt = p.public_term(encode(t, x.frac));
    let hi = Share { ring: x.ring.add_scalar(tt.wrapping_neg()), frac: x.frac };
    let lo = Share { ring: x.ring.add_scalar(tt), frac: x.frac };
    let bits = ge_zero_bits(p, &concat(&[x, &hi, &lo]))?;
    Ok(split(&bits, 3))
}

/// GeLU over the whole real line (PUMA-style piecewise, with one polynomial in |x|):
/// GeLU(x) = relu(x) − h(|x|) on [−4, 4] with h(a) = a·Φ(−a) ≈ H(a/4) (degree 8), x above 4 and
/// 0 below −4. With H = E + O (even and odd powers of x/4), h(|x|) = E ± O by the sign of x, and
/// with bits b₀ = [x ≥ 0], b₊ = [x ≥ 4], b₋ = [x ≥ −4]:
///   GeLU(x) = b₀·(x − 2O) + b₊·(E + O) + b₋·(O − E),
/// three bit injections in one round. 11 rounds: polynomial 7, sign bits 3, selection 1.
/// Max error vs the exact function 1.3e−4 (at the cut-off; 1.1e−4 inside), plus fixed point.
pub fn gelu(p: &mut Party, x: &Share, form: GeluForm) -> Result<Share, ChannelError> {
    let h = match form {
        GeluForm::Erf => &GELU_ERF_H[..],
        GeluForm::Tanh => &GELU_TANH_H[..],
    };
    let (ev, od) = poly_parts(p, x, h, GELU_T)?;
    let b = three_bits(p, x, GELU_T)?;
    let v0 = Share { ring: x.ring.sub(&od.ring.scale(2)), frac: x.frac };
    let v1 = Share { ring: ev.ring.add(&od.ring), frac: x.frac };
    let v2 = Share { ring: od.ring.sub(&ev.ring), frac: x.frac };
    let flat = |s: &Share| Share { ring: RingTensor::new(&[s.ring.len()], s.ring.data.clone()), frac: s.frac };
    let (v0, v1, v2) = (flat(&v0), flat(&v1), flat(&v2));
    let r = bit_mul_many(p, &[(&b[0], &v0), (&b[1], &v1), (&b[2], &v2)])?;
    Ok(Share { ring: RingTensor::new(&x.ring.shape, r[0].ring.add(&r[1].ring).add(&r[2].ring).data), frac: x.frac })
}

/// Extra fractional bits of the segment constants of [`tanh`] (and of the sum before its
/// one truncation): slopes ≤ 1 times |x|·2^f ≤ 2^(f+3) stay below 2^(f+35) ≤ 2^55.
const TANH_EXTRA: u32 = 32;

/// tanh over the whole real line as a lookup of its segment (the pooler's activation: one
/// row of H values, so thousands of comparisons per value cost little and rounds are what
/// counts). The thermometer code [x ≥ kⱼ] over all 301 [`tanh_knots`] comes from one opening
/// (`ge_thresholds`, 3 rounds); adjacent bits XOR to the one-hot segment hⱼ, injected together
/// with the products hⱼ·x (`inject_many`, 1 round); then Σⱼ hⱼ·aⱼ + bⱼ·(hⱼ·x) with the segment's
/// intercept and slope at f + 32 bits, truncated once (1 round). 5 rounds (the degree-10
/// polynomial this replaced took 15); max error 2.3e−5 from tanh.
pub fn tanh(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let f = x.frac;
    let knots = tanh_knots();
    let ts: Vec<u64> = knots.iter().map(|&k| encode(k, f)).collect();
    let m = knots.len();
    let ge = ge_thresholds(p, x, &ts)?;
    let one = p.public_term(1);
    let n = x.ring.len();
    // Segment j + 1 lies between knots j and j + 1; segment 0 below the first, m above the last.
    let mut h = Vec::with_capacity(n * (m + 1));
    for g in ge.chunks(m) {
        h.push(g[0] ^ one);
        h.extend(g.windows(2).map(|w| w[0] ^ w[1]));
        h.push(g[m - 1]);
    }
    let (hb, hx) = inject_many(p, &h, &x.ring.data, m + 1)?;
    let seg: Vec<(u64, u64)> = tanh_segments().iter().map(|&(a, b)| (encode(a, f + TANH_EXTRA), encode(b, TANH_EXTRA))).collect();
    let y: Vec<u64> = (0..n)
        .map(|i| {
            (0..=m).fold(0u64, |acc, j| {
                let q = i * (m + 1) + j;
                acc.wrapping_add(hb[q].wrapping_mul(seg[j].0)).wrapping_add(hx[q].wrapping_mul(seg[j].1))
            })
        })
        .collect();
    truncate(p, &Share { ring: RingTensor::new(&x.ring.shape, y), frac: f + TANH_EXTRA }, TANH_EXTRA)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpc::fixed::decode;
    use crate::mpc::run::{run_local, share_public};

    /// The libm-free constants equal libm's to within rounding (the table's accuracy is
    /// unchanged; only its bits no longer depend on the platform).
    #[test]
    fn libm_free_constants_match_libm() {
        for k in -600..=600 {
            let (ours, libm) = (det_tanh(k), (k as f64 / 64.0).tanh());
            assert!((ours - libm).abs() <= 4.0 * f64::EPSILON, "tanh({k}/64): {ours} vs {libm}");
        }
        for e in -90..=90 {
            let (ours, libm) = (rsqrt_factor(e), 2f64.powf(-e as f64 / 2.0));
            assert!((ours / libm - 1.0).abs() <= f64::EPSILON, "2^(−{e}/2): {ours} vs {libm}");
        }
    }

    /// The normalisation with a piecewise-linear guess (eight segments, thresholds rounded up
    /// for tiny x): u = x/2^k ∈ [1, 2) and y₀ = aⱼ − bⱼ·u for u's own segment j, everywhere from
    /// one ulp up, including the segment boundaries.
    #[test]
    fn normalise_picks_the_leading_bit_and_the_segment() {
        let f = 18u32;
        // Lines with 0 < y₀ < 2, as `normalise` requires (y₀·2^61 inside the truncation's domain).
        let guess: Vec<(f64, f64)> = (0..8).map(|j| (1.0 + 0.1 * j as f64, 0.01 * (j + 1) as f64)).collect();
        let mut xs: Vec<u64> = (1..40).collect();
        for k in [5u32, 17, 18, 30, 44] {
            for j in 0..8u64 {
                let b = (1u64 << k) + (j << k).div_ceil(8);
                xs.extend([b - 1, b, b + 1]);
            }
        }
        let x = RingTensor::new(&[xs.len()], xs.clone());
        let (a, b) = share_public(&x);
        let sh = [a, b];
        let g = guess.clone();
        let ((o0, p0), (o1, _), _) = run_local(move |p| {
            let (xc, y0, _) = normalise(p, &Share { ring: sh[p.id].clone(), frac: f }, &g, &[]).unwrap();
            crate::mpc::protocol::truncate_many(p, &[xc, y0], 61 - f).unwrap()
        });
        let (u, y0) = (o0[0].ring.add(&o1[0].ring), o0[1].ring.add(&o1[1].ring));
        for (i, &v) in xs.iter().enumerate() {
            let k = 63 - v.leading_zeros();
            let uq = v as f64 / 2f64.powi(k as i32);
            let j = ((uq - 1.0) * 8.0).floor() as usize;
            let (got_u, got_y) = (decode(u.data[i], f), decode(y0.data[i], f));
            assert!((got_u - uq).abs() <= 2.0 / 2f64.powi(f as i32), "u({v}) = {got_u} vs {uq}");
            let want = guess[j].0 - guess[j].1 * uq;
            assert!((got_y - want).abs() <= 3.0 / 2f64.powi(f as i32), "y0({v}) = {got_y} vs {want} (segment {j})");
        }
        assert_eq!(p0.totals().rounds, 5, "normalisation 4 + the test's truncation 1");
    }
}
