//! Two-party arithmetic protocols over Z_2^64 on additive shares, each a function of an explicit
//! [`Party`] context (transport-agnostic).

use super::channel::ChannelError;
use super::dealer::{Material, Request};
use super::party::{public_term_of, LayerClass, Party, Rider, Share};
use super::ring::{PackedB, RingTensor};

/// Reveal several shared tensors in **one** round (independent openings batched together).
///
/// 1. each party sends its shares of all tensors in one message;
/// 2. each adds the peer's shares to its own.
pub fn open_many(p: &mut Party, xs: &[&RingTensor]) -> Result<Vec<RingTensor>, ChannelError> {
    let mine: Vec<u64> = xs.iter().flat_map(|x| x.data.iter().copied()).collect();
    let theirs = p.exchange(&mine)?;
    let mut out = Vec::with_capacity(xs.len());
    let mut off = 0;
    for x in xs {
        let n = x.len();
        let t = RingTensor::new(&x.shape, theirs[off..off + n].to_vec());
        out.push(x.add(&t));
        off += n;
    }
    Ok(out)
}

/// Reveal several shared tensors in one round, tensor i only from bit kᵢ up and modulo 2^wᵢ
/// (`xs[i]` = (x, kᵢ, wᵢ)): each party sends ⌊(cⱼ mod 2^w)/2^k⌋ in w − k bits
/// (`Party::exchange_packed`) and both get
///   c′ = 2^k·(⌊c₀′/2^k⌋ + ⌊c₁′/2^k⌋) mod 2^w = (c − e) mod 2^w,  e = (c₀ mod 2^k) + (c₁ mod 2^k) ∈ [0, 2^(k+1) − 2],
/// i.e. the opened value modulo 2^w less an error below 2^(k+1) that neither party knows alone.
/// Used for truncation openings, whose low bits are shifted out anyway and whose input is known
/// to lie far below 2^(w−1) ([`truncate`]). Privacy is that of a full opening: what a party sends
/// is a function of its share of a value masked by a ring element the peer does not hold and
/// that is uniform modulo 2^w, so it is uniform given the peer's view.
pub fn open_many_high(p: &mut Party, xs: &[(&RingTensor, u32, u32)]) -> Result<Vec<RingTensor>, ChannelError> {
    if xs.iter().all(|(_, k, w)| *k == 0 && *w == 64) {
        return open_many(p, &xs.iter().map(|(x, _, _)| *x).collect::<Vec<_>>());
    }
    let highs: Vec<Vec<u64>> = xs.iter().map(|(x, k, w)| high_bits(x, *k, *w)).collect();
    let segs: Vec<(&[u64], u32)> = highs.iter().zip(xs).map(|(h, (_, k, w))| (h.as_slice(), w - k)).collect();
    let theirs = p.exchange_packed(&segs)?;
    let mut out = Vec::with_capacity(xs.len());
    let mut off = 0;
    for (h, (x, k, w)) in highs.iter().zip(xs) {
        out.push(RingTensor::new(&x.shape, join_high_bits(h, &theirs[off..off + h.len()], *k, *w)));
        off += h.len();
    }
    Ok(out)
}

/// The low `w` bits set.
fn width_mask(w: u32) -> u64 {
    u64::MAX >> (64 - w)
}

/// What a party sends of x in a high-bits opening: each word modulo 2^w without its low k bits.
fn high_bits(x: &RingTensor, k: u32, w: u32) -> Vec<u64> {
    let m = width_mask(w);
    x.data.iter().map(|&v| (v & m) >> k).collect()
}

/// The opened value modulo 2^w from both parties' high bits (low k bits zero).
fn join_high_bits(mine: &[u64], theirs: &[u64], k: u32, w: u32) -> Vec<u64> {
    let m = width_mask(w);
    mine.iter().zip(theirs).map(|(&a, &b)| a.wrapping_add(b).wrapping_shl(k) & m).collect()
}

/// A truncation by `f` bits of values known to lie in [−2^(width−2) + 2^(f+1), 2^(width−2)):
/// the opening and the carry arithmetic run modulo 2^width ([`truncate`]), so the opening sends
/// width − f + 1 bits per element instead of 65 − f. `width` = 64 is the general case (any value
/// in [−2^62 + 2^(f+1), 2^62)); callers that know a tighter bound on their input — attention
/// scores, for one — pass a narrower width and save the bits above it. The output is a full
/// Z_2^64 share either way (the dealer's shares of r's parts are over Z_2^64). Outside the domain
/// the result is garbage, exactly as for width 64 outside its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    pub f: u32,
    pub width: u32,
}

impl Shift {
    /// A truncation by f bits over the whole ring.
    pub const fn full(f: u32) -> Self {
        Self { f, width: 64 }
    }

    /// A truncation by f bits of values below 2^(width − 2) in magnitude.
    pub fn narrow(f: u32, width: u32) -> Self {
        assert!(width <= 64 && f > 0 && f + 3 <= width, "truncation by {f} bits in a {width}-bit ring");
        Self { f, width }
    }
}

impl Shift {
    /// (msb_w(v), (v mod 2^(w−1)) >> f): bit w − 1 of a ring value and its low w − 1 bits
    /// shifted — how the opened c and the dealer's r enter the truncation (step 5 of
    /// [`truncate`]).
    pub(crate) fn split(self, v: u64) -> (u64, u64) {
        ((v >> (self.width - 1)) & 1, (v & width_mask(self.width - 1)) >> self.f)
    }

    /// 2^(w−1−f): the weight of the carry out of the low w − 1 bits after the shift.
    pub(crate) fn carry_weight(self) -> u64 {
        1u64 << (self.width - 1 - self.f)
    }
}

impl From<u32> for Shift {
    fn from(f: u32) -> Self {
        Self::full(f)
    }
}

/// Low bits of its share of a truncation's masked value that a party leaves out of the opening
/// when truncating by f bits ([`truncate`]): k = f − 1, which saves k/64 of the opening's bytes
/// and widens the truncation's error from < 1 to < 1.25 units.
pub(crate) fn trunc_drop(f: u32) -> u32 {
    f - 1
}

/// The public constants of a truncation by f bits in a w-bit ring with the high-bits opening
/// (k = f − 1 ≥ 1): P0 adds B = 2^(w−2) − 2^k − 2^(k−1) before masking, and 2^(w−2−f) − 1 is
/// subtracted after the shift. Then x'' = x + B − e = x + (2^(w−2) − 2^f) + d, d = 2^(k−1) − e,
/// with the unknown error of the opening e ∈ [0, 2^(k+1) − 2] (mean 2^k − 1): d/2^f ∈ (−3/4, 1/4]
/// with mean −1/4, which cancels the +1/4 the opened value's zero low bits add to Π_TruncPr's
/// rounding (see [`truncate`]); the first term is removed exactly by the second constant; and
/// x'' ∈ [0, 2^(w−1)) for every x ∈ [−2^(w−2) + 2^(f+1), 2^(w−2)) — the positive side of the
/// domain is the full one, which the normalisations that scale x into [2^61, 2^62) rely on
/// (w = 64). Without dropped bits (f = 1): B = 2^(w−2) and 2^(w−2−f), as in Π_TruncPr. Returns
/// (B, the second constant).
pub(crate) fn trunc_consts(s: Shift) -> (u64, u64) {
    let (f, w) = (s.f, s.width);
    match trunc_drop(f) {
        0 => (1u64 << (w - 2), 1u64 << (w - 2 - f)),
        k => ((1u64 << (w - 2)) - (1u64 << k) - (1u64 << (k - 1)), (1u64 << (w - 2 - f)) - 1),
    }
}

pub fn open(p: &mut Party, x: &Share) -> Result<RingTensor, ChannelError> {
    Ok(open_many(p, &[&x.ring])?.remove(0))
}

pub fn add(x: &Share, y: &Share) -> Share {
    assert_eq!(x.frac, y.frac, "adding shares of different scales");
    Share { ring: x.ring.add(&y.ring), frac: x.frac }
}

pub fn sub(x: &Share, y: &Share) -> Share {
    assert_eq!(x.frac, y.frac, "subtracting shares of different scales");
    Share { ring: x.ring.sub(&y.ring), frac: x.frac }
}

/// Add a public fixed-point tensor (same scale).
pub fn add_public(p: &Party, x: &Share, c: &RingTensor) -> Share {
    let ring = if p.id == 0 { x.ring.add(c) } else { x.ring.clone() };
    Share { ring, frac: x.frac }
}

/// Beaver multiplication, elementwise, **without** truncation (result scale = sum of scales).
///
/// 1. obtain a triple [a],[b],[c = a∘b] from the dealer;
/// 2. open e = x − a and f = y − b together (one round);
/// 3. [z] = [c] + e∘[b] + [a]∘f + e∘f (the public product added by P0 only).
pub fn mul_raw(p: &mut Party, x: &Share, y: &Share) -> Result<Share, ChannelError> {
    let n = x.ring.len();
    assert_eq!(x.ring.shape, y.ring.shape, "mul: shape mismatch");
    let t = p.preprocessing(Request::Mul { n })?;
    let a = RingTensor::new(&x.ring.shape, t.a.data);
    let b = RingTensor::new(&x.ring.shape, t.b.data);
    let c = RingTensor::new(&x.ring.shape, t.c.data);
    let opened = open_many(p, &[&x.ring.sub(&a), &y.ring.sub(&b)])?;
    let (e, f) = (&opened[0], &opened[1]);
    let mut z = c.add(&e.mul(&b)).add(&a.mul(f));
    if p.id == 0 {
        z = z.add(&e.mul(f));
    }
    Ok(Share { ring: z, frac: x.frac + y.frac })
}

/// Beaver matrix product [m,k]·[k,n], without truncation.
pub fn matmul_raw(p: &mut Party, x: &Share, y: &Share) -> Result<Share, ChannelError> {
    let (m, k) = (x.ring.shape[0], x.ring.shape[1]);
    let n = y.ring.shape[1];
    let t = p.preprocessing(Request::MatMul { m, k, n })?;
    let opened = open_many(p, &[&x.ring.sub(&t.a), &y.ring.sub(&t.b)])?;
    let (e, f) = (&opened[0], &opened[1]);
    let mut z = t.c.add(&e.matmul(&t.b)).add(&t.a.matmul(f));
    if p.id == 0 {
        z = z.add(&e.matmul(f));
    }
    Ok(Share { ring: z, frac: x.frac + y.frac })
}

/// Probabilistic truncation by `f` bits that never fails catastrophically.
///
/// CrypTen's local 2PC truncation (each party shifts its own share) is wrong by ±2^(64−f) with
/// probability ≈ |x|/2^64 per element. Here (Escudero et al., CRYPTO 2020, Π_TruncPr with a
/// dealer, opened from bit k = f − 1 up), in a ring of w bits ([`Shift`]; w = 64 unless the
/// caller knows a tighter bound), for x ∈ [−2^(w−2) + 2^(f+1), 2^(w−2)):
/// 1. x' = x + B, B ≈ 2^(w−2) ([`trunc_consts`]; P0 adds the constant);
/// 2. the dealer supplies [r] (uniform), [msb_w(r)] (bit w − 1) and [(r mod 2^(w−1)) >> f];
/// 3. open c = x' + r mod 2^w **from bit k up** (one round, [`open_many_high`]): the parties learn
///    c − e mod 2^w for an unknown e ∈ [0, 2^(k+1) − 2], i.e. c = x'' + r mod 2^w with
///    x'' = x' − e ∈ [0, 2^(w−1)), msb_w(x'') = 0, and x'' = x + (2^(w−2) − 2^f) + d,
///    d/2^f ∈ (−3/4, 1/4];
/// 4. the carry out of the low w − 1 bits is b = msb_w(c) ⊕ msb_w(r), i.e.
///    [b] = msb_w(c) + [msb_w r] − 2·msb_w(c)·[msb_w r];
/// 5. [x >> f] = ((c mod 2^(w−1)) >> f) − [(r mod 2^(w−1)) >> f] + [b]·2^(w−1−f) − (2^(w−2−f) − 1).
///
/// Why it is exact up to 1.25 units: writing r mod 2^w = msb_w(r)·2^(w−1) + r_low,
/// c_low = x'' + r_low − b·2^(w−1), so x'' = c_low − r_low + b·2^(w−1) with no modular
/// ambiguity, and the two floors in step 5 are
/// ⌊c_low/2^f⌋ − ⌊r_low/2^f⌋ = (c_low − r_low)/2^f + frac(r_low/2^f) − frac(c_low/2^f), where the
/// first fraction is uniform in [0, 1) and the second is 0 or 1/2 (c_low is a multiple of
/// 2^(f−1)): the result is x/2^f + d/2^f + (something in (−1/2, 1)), i.e. within (−1.25, 1.25)
/// of x/2^f with probability 1 for every x in the domain (the wrap-error probability is
/// **zero**, not just below 2^−40), and its mean error is 0 (1/2 − 1/4 − 1/4). Step 5 is an
/// identity over the integers, so its Z_2^64 shares hold the result at full width whatever w is.
/// The high-bits opening sends w − f + 1 bits per element instead of 64 (47 at f = 18 and
/// w = 64, 22 for the normalisations' shifts of 61 − f). Fixed-point products with f = 16 and
/// |x·y| < 2^30 stay far inside the w = 64 domain (2f + 31 bits < 62).
pub fn truncate(p: &mut Party, x: &Share, s: impl Into<Shift>) -> Result<Share, ChannelError> {
    let s = s.into();
    let f = s.f;
    assert!(f > 0 && f < 62 && x.frac >= f, "truncate: bad shift {f} for scale {}", x.frac);
    let t = p.preprocessing(Request::Trunc { n: x.ring.len(), f, width: s.width })?;
    let masked = trunc_masked(p.id, &x.ring, &t, s);
    let c = open_many_high(p, &[(&masked, trunc_drop(f), s.width)])?.remove(0);
    Ok(Share { ring: trunc_finish(p.id, &c, &t, s), frac: x.frac - f })
}

/// The value a truncation opens (before its low bits are dropped): x + B + r.
fn trunc_masked(id: usize, x: &RingTensor, t: &Material, s: Shift) -> RingTensor {
    x.add_scalar(public_term_of(id, trunc_consts(s).0)).add(&RingTensor::new(&x.shape, t.a.data.clone()))
}

/// This party's share of the truncated value, from the opened c (modulo 2^w) and the material
/// (r, msb_w(r), rt).
fn trunc_finish(id: usize, c: &RingTensor, t: &Material, s: Shift) -> RingTensor {
    let (rmsb, rt) = (&t.b, &t.c);
    let pt = |v: u64| public_term_of(id, v);
    let unshift = trunc_consts(s).1;
    let out = (0..c.len())
        .map(|i| {
            let (cmsb, chigh) = s.split(c.data[i]);
            // [b] = cmsb + [rmsb] − 2·cmsb·[rmsb]
            let b = pt(cmsb).wrapping_add(rmsb.data[i]).wrapping_sub(2u64.wrapping_mul(cmsb).wrapping_mul(rmsb.data[i]));
            pt(chigh).wrapping_sub(rt.data[i]).wrapping_add(b.wrapping_mul(s.carry_weight())).wrapping_sub(pt(unshift))
        })
        .collect();
    RingTensor::new(&c.shape, out)
}

/// Fixed-point multiply: Beaver product, then truncate back to `x.frac` bits.
pub fn mul(p: &mut Party, x: &Share, y: &Share) -> Result<Share, ChannelError> {
    let z = mul_raw(p, x, y)?;
    truncate(p, &z, y.frac)
}

/// Fixed-point matrix product, truncated back to `x.frac` bits.
pub fn matmul(p: &mut Party, x: &Share, y: &Share) -> Result<Share, ChannelError> {
    let z = matmul_raw(p, x, y)?;
    truncate(p, &z, y.frac)
}

/// Beaver squaring (a square pair instead of a triple: one opening, half the traffic of `mul`),
/// then truncation.
///
/// 1. obtain [a], [c = a∘a]; 2. open e = x − a; 3. [x²] = [c] + 2e∘[a] + e∘e (P0 adds e∘e).
pub fn square(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let z = square_raw(p, x)?;
    truncate(p, &z, x.frac)
}

/// Beaver squaring without truncation (result scale 2·frac).
pub fn square_raw(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let n = x.ring.len();
    let t = p.preprocessing(Request::Square { n })?;
    let a = RingTensor::new(&x.ring.shape, t.a.data);
    let c = RingTensor::new(&x.ring.shape, t.c.data);
    let e = open_many(p, &[&x.ring.sub(&a)])?.remove(0);
    let mut z = c.add(&e.mul(&a).scale(2));
    if p.id == 0 {
        z = z.add(&e.mul(&e));
    }
    Ok(Share { ring: z, frac: 2 * x.frac })
}

/// A shared weight matrix prepared for repeated products: its mask B is fixed for the model's
/// lifetime, so W − B is opened **once** (at model load) instead of once per inference.
pub struct WeightShare {
    id: u64,
    /// W − B, public to both parties (reveals nothing: B is uniform and used only here).
    masked: RingTensor,
    /// W − B, packed once for the GEMM kernel (the input-independent term [a]·(W − B)).
    masked_packed: PackedB,
    /// The online right-hand side: P0 packs (W − B) + B₀, P1 packs B₁, so the input-dependent
    /// part e·[B] + e·(W − B) is one GEMM per party.
    online_packed: PackedB,
    pub frac: u32,
}

impl std::fmt::Debug for WeightShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightShare{{id: {}, shape: {:?}, ..}}", self.id, self.masked.shape)
    }
}

/// Register a fixed mask for weight `w` [k,n] under `id` (unique per weight) and open W − B.
pub fn prepare_weight(p: &mut Party, w: &Share, id: u64) -> Result<WeightShare, ChannelError> {
    let (k, n) = (w.ring.shape[0], w.ring.shape[1]);
    let t = p.preprocessing(Request::WeightMask { id, k, n })?;
    let b = RingTensor::new(&[k, n], t.b.data);
    let masked = open_many(p, &[&w.ring.sub(&b)])?.remove(0);
    let masked_packed = PackedB::new(&masked.data, k, n);
    let online = if p.id == 0 { masked.add(&b) } else { b };
    let online_packed = PackedB::new(&online.data, k, n);
    Ok(WeightShare { id, masked, masked_packed, online_packed, frac: w.frac })
}

/// A weight vector (LayerNorm's γ) with a fixed elementwise mask B registered with the dealer:
/// γ − B is opened once per model, like a [`WeightShare`]; products with it open nothing
/// (`fused::Operand::Fixed`).
pub struct VecShare {
    pub(crate) id: u64,
    /// γ − B, public to both parties.
    pub(crate) masked: RingTensor,
    /// This party's share of B.
    pub(crate) b: RingTensor,
    pub frac: u32,
}

impl std::fmt::Debug for VecShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VecShare{{id: {}, len: {}, ..}}", self.id, self.masked.len())
    }
}

/// Register a fixed mask for the weight vector `v` under `id` and open v − B (one round, at
/// model preparation).
pub fn prepare_vector(p: &mut Party, v: &Share, id: u64) -> Result<VecShare, ChannelError> {
    let n = v.ring.len();
    let t = p.preprocessing(Request::VecMask { id, n })?;
    let b = RingTensor::new(&[n], t.b.data);
    let masked = open_many(p, &[&RingTensor::new(&[n], v.ring.data.clone()).sub(&b)])?.remove(0);
    Ok(VecShare { id, masked, b, frac: v.frac })
}

/// [x]·W for a prepared weight: opens only x − a (m×k elements) per call, then truncates.
///
/// With f = W − B public and e = x − a opened: x·W = (e + a)(f + B), so
/// [z] = [c = a·B] + [a]·f + e·[B] + e·f (P0 adds e·f). The first two terms do not depend on
/// the input: they are computed (and timed) as preprocessing, before the opening.
pub fn matmul_weight(p: &mut Party, x: &Share, w: &WeightShare) -> Result<Share, ChannelError> {
    Ok(matmul_weights(p, x, &[w])?.remove(0))
}

/// The input-independent part [c] + [a]·(W − B) of a product with a prepared weight.
fn offline_term(p: &mut Party, w: &WeightShare, a: &RingTensor, c: &RingTensor) -> RingTensor {
    let t = std::time::Instant::now();
    let z = c.add(&a.matmul_packed(&w.masked_packed));
    p.add_offline_seconds(t.elapsed().as_secs_f64());
    z
}

/// Truncate several shares in one round (one batched opening), each by the same shift.
pub fn truncate_many(p: &mut Party, xs: &[Share], f: impl Into<Shift>) -> Result<Vec<Share>, ChannelError> {
    let all: Vec<u64> = xs.iter().flat_map(|x| x.ring.data.iter().copied()).collect();
    let Some(frac) = xs.first().map(|x| x.frac) else { return Ok(vec![]) };
    assert!(xs.iter().all(|x| x.frac == frac), "truncate_many: mixed scales");
    let n = all.len();
    let t = truncate(p, &Share { ring: RingTensor::new(&[n], all), frac }, f)?;
    let mut off = 0;
    Ok(xs
        .iter()
        .map(|x| {
            let k = x.ring.len();
            let s = Share { ring: RingTensor::new(&x.ring.shape, t.ring.data[off..off + k].to_vec()), frac: t.frac };
            off += k;
            s
        })
        .collect())
}

/// [x]·Wᵢ for several prepared weights sharing the input: one opening of x − aᵢ for all of
/// them, one batched truncation (2 rounds in total).
pub fn matmul_weights(p: &mut Party, x: &Share, ws: &[&WeightShare]) -> Result<Vec<Share>, ChannelError> {
    let raw = matmul_weights_raw(p, x, ws)?;
    truncate_many(p, &raw, ws.first().map_or(x.frac, |w| w.frac))
}

/// [`matmul_weights`] without the truncation (one round; scale x.frac + w.frac), for callers
/// that fuse the truncation with the next product.
pub fn matmul_weights_raw(p: &mut Party, x: &Share, ws: &[&WeightShare]) -> Result<Vec<Share>, ChannelError> {
    let m = x.ring.shape[0];
    let mut mats = Vec::with_capacity(ws.len());
    let mut pre = Vec::with_capacity(ws.len());
    for w in ws {
        assert_eq!(x.ring.shape[1], w.masked.shape[0], "matmul_weight: inner dimensions");
        let t = p.preprocessing(Request::MatMulFixed { id: w.id, m })?;
        pre.push(offline_term(p, w, &t.a, &t.c));
        mats.push(t);
    }
    let masked: Vec<RingTensor> = mats.iter().map(|t| x.ring.sub(&t.a)).collect();
    let opened = open_many(p, &masked.iter().collect::<Vec<_>>())?;
    let raw: Vec<Share> = ws
        .iter()
        .zip(&pre)
        .zip(&opened)
        .map(|((w, z0), e)| Share { ring: z0.add(&e.matmul_packed(&w.online_packed)), frac: x.frac + w.frac })
        .collect();
    Ok(raw)
}

/// Several shared×shared matrix products in one round (Beaver matrix triples), untruncated.
pub fn matmul_many_raw(p: &mut Party, pairs: &[(&Share, &Share)]) -> Result<Vec<Share>, ChannelError> {
    let mut mats = Vec::with_capacity(pairs.len());
    for (x, y) in pairs {
        let (m, k, n) = (x.ring.shape[0], x.ring.shape[1], y.ring.shape[1]);
        mats.push(p.preprocessing(Request::MatMul { m, k, n })?);
    }
    let mut masked = Vec::with_capacity(2 * pairs.len());
    for ((x, y), t) in pairs.iter().zip(&mats) {
        masked.push(x.ring.sub(&t.a));
        masked.push(y.ring.sub(&t.b));
    }
    let opened = open_many(p, &masked.iter().collect::<Vec<_>>())?;
    Ok(pairs
        .iter()
        .zip(&mats)
        .enumerate()
        .map(|(i, ((x, y), t))| Share { ring: beaver_matmul(p.id, &opened[2 * i], &opened[2 * i + 1], t), frac: x.frac + y.frac })
        .collect())
}

/// [X·Y] from the opened E = X − A, F = Y − B and the triple (A, B, C = A·B):
/// C + E·B + A·F (+ E·F on P0).
fn beaver_matmul(id: usize, e: &RingTensor, f: &RingTensor, t: &Material) -> RingTensor {
    let z = t.c.add(&e.matmul(&t.b)).add(&t.a.matmul(f));
    if id == 0 {
        z.add(&e.matmul(f))
    } else {
        z
    }
}

/// Truncate x (by `shift`) and multiply row blocks of the result by ys, as a [`Rider`]: its two
/// openings (the truncation's high bits, then E = t − A and F = y − B of every product) travel
/// in the next two rounds of whatever protocol runs meanwhile, and `detach_rider` hands back
/// the products. 2Quad attention runs its q·V this way inside the reciprocal of Σq, which does
/// not need it. x is [blocks·m, k] with block i multiplied by ys[i] [k, n]; the products are
/// untruncated (scale x.frac − shift + y.frac).
pub struct TruncMatmul {
    id: usize,
    class: LayerClass,
    /// This party's high bits of the truncation's masked value (the first message), and x's shape.
    highs: Vec<u64>,
    shape: Vec<usize>,
    frac: u32,
    shift: Shift,
    ys: Vec<Share>,
    trunc: Material,
    triples: Vec<Material>,
    stage: u8,
    opened: Vec<u64>,
    /// The products, once both openings are in.
    pub products: Vec<Share>,
}

impl TruncMatmul {
    /// Fetch the material now (the dealer's order is the schedule's) and prepare the first message.
    pub fn new(p: &mut Party, x: &Share, shift: impl Into<Shift>, ys: Vec<Share>, class: LayerClass) -> Result<Self, ChannelError> {
        let shift = shift.into();
        let f = shift.f;
        assert!(f > 0 && f < 62 && x.frac >= f, "truncate: bad shift {f} for scale {}", x.frac);
        let (rows, k) = (x.ring.shape[0], x.ring.shape[1]);
        assert!(!ys.is_empty() && rows % ys.len() == 0, "TruncMatmul: {rows} rows in {} blocks", ys.len());
        let trunc = p.preprocessing(Request::Trunc { n: x.ring.len(), f, width: shift.width })?;
        let m = rows / ys.len();
        let mut triples = Vec::with_capacity(ys.len());
        for y in &ys {
            assert_eq!(y.ring.shape[0], k, "TruncMatmul: inner dimensions");
            triples.push(p.preprocessing(Request::MatMul { m, k, n: y.ring.shape[1] })?);
        }
        let highs = high_bits(&trunc_masked(p.id, &x.ring, &trunc, shift), trunc_drop(f), shift.width);
        let shape = x.ring.shape.clone();
        Ok(Self { id: p.id, class, highs, shape, frac: x.frac - f, shift, ys, trunc, triples, stage: 0, opened: vec![], products: vec![] })
    }
}

impl Rider for TruncMatmul {
    fn next_message(&mut self) -> Option<Vec<u8>> {
        match self.stage {
            0 => Some(super::channel::pack_bits(&[(&self.highs, self.shift.width - trunc_drop(self.shift.f))])),
            1 => Some(super::channel::to_bytes(&self.opened)),
            _ => None,
        }
    }

    fn receive(&mut self, theirs: Vec<u8>) -> Result<(), ChannelError> {
        match self.stage {
            0 => {
                let (k, w) = (trunc_drop(self.shift.f), self.shift.width);
                let theirs = super::channel::unpack_bits(&theirs, &[(self.highs.len(), w - k)])?;
                let c = RingTensor::new(&self.shape, join_high_bits(&self.highs, &theirs, k, w));
                let t = trunc_finish(self.id, &c, &self.trunc, self.shift);
                let (rows, kk) = (t.shape[0], t.shape[1]);
                let m = rows / self.ys.len();
                let mut mine = Vec::new();
                for (i, (y, tr)) in self.ys.iter().zip(&self.triples).enumerate() {
                    let xi = RingTensor::new(&[m, kk], t.data[i * m * kk..(i + 1) * m * kk].to_vec());
                    mine.extend(xi.sub(&tr.a).data);
                    mine.extend(y.ring.sub(&tr.b).data);
                }
                self.opened = mine;
            }
            1 => {
                let theirs = super::channel::from_bytes(&theirs, self.opened.len())?;
                let mut off = 0;
                for (y, tr) in self.ys.iter().zip(&self.triples) {
                    let mut take = |shape: &[usize]| {
                        let len: usize = shape.iter().product();
                        let v: Vec<u64> = (off..off + len).map(|j| self.opened[j].wrapping_add(theirs[j])).collect();
                        off += len;
                        RingTensor::new(shape, v)
                    };
                    let e = take(&tr.a.shape);
                    let f = take(&tr.b.shape);
                    self.products.push(Share { ring: beaver_matmul(self.id, &e, &f, tr), frac: self.frac + y.frac });
                }
                self.opened.clear();
            }
            _ => return Err(ChannelError::Malformed("a rider message after the last".into())),
        }
        self.stage += 1;
        Ok(())
    }

    fn class(&self) -> LayerClass {
        self.class
    }
}

/// The input-independent half of a client-masked embedding product (see `mpc::model`): this
/// party's [A]·(E − B) + [A·B] from its Aᵢ [m, V] and Cᵢ [m, H] (preprocessing, timed as such).
pub fn embed_offline(p: &mut Party, w: &WeightShare, a: &RingTensor, c: &RingTensor) -> RingTensor {
    assert_eq!(a.shape[1], w.masked.shape[0], "embed_product: vocabulary size");
    offline_term(p, w, a, c)
}

/// This party's share of X·E for a client-masked public X − A [m, V] (no party-to-party
/// communication), given its `embed_offline` term:
/// X·E = (X − A)(E − B) + (X − A)·[B] + [A]·(E − B) + [A·B]. X is an integer (scale 0) matrix,
/// so the result has E's scale and needs no truncation.
pub fn embed_product(w: &WeightShare, xa: &RingTensor, offline: &RingTensor) -> Share {
    assert_eq!(xa.shape[1], w.masked.shape[0], "embed_product: vocabulary size");
    Share { ring: offline.add(&xa.matmul_packed(&w.online_packed)), frac: w.frac }
}

impl WeightShare {
    /// The registered mask id.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// [k, n] of the weight.
    pub fn shape(&self) -> (usize, usize) {
        (self.masked.shape[0], self.masked.shape[1])
    }
}

/// [x ∘ broadcast(y)] for x [rows, l] and one factor y [rows] per row, untruncated: a
/// row-broadcast Beaver triple (a, b, c = a ∘ b per row) opens x − a and only the rows values
/// y − b, about half the traffic of an elementwise product with the broadcast y.
pub fn mul_rows_raw(p: &mut Party, x: &Share, y: &Share) -> Result<Share, ChannelError> {
    let rows = y.ring.len();
    let l = x.ring.len() / rows.max(1);
    assert_eq!(rows * l, x.ring.len(), "mul_rows: {} values for {rows} rows", x.ring.len());
    let t = p.preprocessing(Request::RowMul { rows, l })?;
    let opened = open_many(p, &[&x.ring.sub(&RingTensor::new(&x.ring.shape, t.a.data.clone())), &y.ring.sub(&t.b)])?;
    let z = row_product(p.id, &opened[0], &opened[1], &t, l);
    Ok(Share { ring: RingTensor::new(&x.ring.shape, z), frac: x.frac + y.frac })
}

/// This party's share of x ∘ broadcast(y) from the opened e = x − a, f = y − b and its
/// row-broadcast triple (a [rows·l], b [rows], c = a ∘ broadcast(b)).
fn row_product(id: usize, e: &RingTensor, f: &RingTensor, t: &super::dealer::Material, l: usize) -> Vec<u64> {
    (0..e.len())
        .map(|i| {
            let r = i / l;
            let mut v = t.c.data[i].wrapping_add(e.data[i].wrapping_mul(t.b.data[r])).wrapping_add(t.a.data[i].wrapping_mul(f.data[r]));
            if id == 0 {
                v = v.wrapping_add(e.data[i].wrapping_mul(f.data[r]));
            }
            v
        })
        .collect()
}

/// Elementwise products (one Beaver triple over their concatenation) and row-broadcast products
/// (`mul_rows_raw`), all opened in **one** round; untruncated. Lets a product that does not
/// depend on an iteration ride along with the iteration's own round.
pub fn mul_raw_with_rows(
    p: &mut Party,
    elem: &[(&Share, &Share)],
    rows: &[(&Share, &Share)],
) -> Result<(Vec<Share>, Vec<Share>), ChannelError> {
    let n: usize = elem.iter().map(|(x, _)| x.ring.len()).sum();
    for (x, y) in elem {
        assert_eq!(x.ring.len(), y.ring.len(), "mul: length mismatch");
    }
    let t = p.preprocessing(Request::Mul { n })?;
    let mut rts = Vec::with_capacity(rows.len());
    for (x, y) in rows {
        let r = y.ring.len();
        let l = x.ring.len() / r.max(1);
        assert_eq!(r * l, x.ring.len(), "mul_rows: {} values for {r} rows", x.ring.len());
        rts.push((r, l, p.preprocessing(Request::RowMul { rows: r, l })?));
    }
    // Masked values: all elementwise x − a, then all y − b, then each row pair's x − a, y − b.
    let xs: Vec<u64> = elem.iter().flat_map(|(x, _)| x.ring.data.iter().copied()).collect();
    let ys: Vec<u64> = elem.iter().flat_map(|(_, y)| y.ring.data.iter().copied()).collect();
    let ex = RingTensor::new(&[n], xs).sub(&RingTensor::new(&[n], t.a.data.clone()));
    let fy = RingTensor::new(&[n], ys).sub(&RingTensor::new(&[n], t.b.data.clone()));
    let mut masked = vec![ex, fy];
    for ((x, y), (_, _, rt)) in rows.iter().zip(&rts) {
        masked.push(x.ring.sub(&RingTensor::new(&x.ring.shape, rt.a.data.clone())));
        masked.push(y.ring.sub(&rt.b));
    }
    let opened = open_many(p, &masked.iter().collect::<Vec<_>>())?;
    let (e, f) = (&opened[0], &opened[1]);
    let z: Vec<u64> = (0..n)
        .map(|i| {
            let mut v = t.c.data[i].wrapping_add(e.data[i].wrapping_mul(t.b.data[i])).wrapping_add(t.a.data[i].wrapping_mul(f.data[i]));
            if p.id == 0 {
                v = v.wrapping_add(e.data[i].wrapping_mul(f.data[i]));
            }
            v
        })
        .collect();
    let mut off = 0;
    let elem_out = elem
        .iter()
        .map(|(x, y)| {
            let k = x.ring.len();
            let s = Share { ring: RingTensor::new(&x.ring.shape, z[off..off + k].to_vec()), frac: x.frac + y.frac };
            off += k;
            s
        })
        .collect();
    let row_out = rows
        .iter()
        .zip(&rts)
        .enumerate()
        .map(|(j, ((x, y), (_, l, rt)))| {
            let z = row_product(p.id, &opened[2 + 2 * j], &opened[3 + 2 * j], rt, *l);
            Share { ring: RingTensor::new(&x.ring.shape, z), frac: x.frac + y.frac }
        })
        .collect();
    Ok((elem_out, row_out))
}
