//! Comparisons: the sign bit of a shared value, DReLU and ReLU, exact for every ring element.
//!
//! MSB extraction with dealer-supplied edaBits (a uniform r shared both arithmetically and
//! bitwise, Escudero et al. CRYPTO 2020):
//! 1. open c = x + r (one round); then x = c − r exactly, with no range assumption;
//! 2. the bits of c − r = c + ¬r + 1 come from a carry-lookahead (Kogge–Stone) over XOR-shared
//!    64-bit words: generate g = c ∧ ¬r and propagate p = c ⊕ ¬r are local (c is public); the
//!    carry-in 1 is folded into bit 0; six prefix levels (spans 1…32), each one round of two
//!    batched AND gates on words;
//! 3. msb = p₆₃ ⊕ carry₆₂;
//! 4. to arithmetic with a daBit t: open v = msb ⊕ t (one round), [msb] = v + [t] − 2v·[t].
//!
//! Step 2 for the sign bit alone runs as a tree of fan-in-4 AND gates whose first level is local
//! (the dealer shares the products of r's bits within each group of four) and whose other two
//! levels are one round each (`and4`).
//!
//! Rounds: sign bit 3, DReLU 4 (3 + daBit conversion), ReLU 4: the XOR-shared sign bit is
//! injected straight into the product (`bit_mul_many`: one round opens b ⊕ t and x − a
//! together), so the bit is never converted separately. The binary carry circuit gives full
//! arithmetic-to-binary conversion (`to_bits`, 7 rounds).

use super::channel::ChannelError;
use super::dealer::{Request, TOURNAMENT_MAX_K};
use super::party::{Party, Share};
use super::protocol::open_many;
use super::ring::RingTensor;

/// AND of XOR-shared words, several pairs in one round (Beaver triples over GF(2)^64).
fn and_many(p: &mut Party, pairs: &[(&RingTensor, &RingTensor)]) -> Result<Vec<RingTensor>, ChannelError> {
    let n: usize = pairs.iter().map(|(x, _)| x.len()).sum();
    let t = p.preprocessing(Request::AndTriple { n })?;
    let mut mine = Vec::with_capacity(2 * n);
    let mut off = 0;
    for (x, y) in pairs {
        for i in 0..x.len() {
            mine.push(x.data[i] ^ t.a.data[off + i]);
            mine.push(y.data[i] ^ t.b.data[off + i]);
        }
        off += x.len();
    }
    let theirs = p.exchange(&mine)?;
    let mut out = Vec::with_capacity(pairs.len());
    let mut off = 0;
    for (x, _) in pairs {
        let mut z = Vec::with_capacity(x.len());
        for i in 0..x.len() {
            let j = off + i;
            let d = mine[2 * j] ^ theirs[2 * j];
            let e = mine[2 * j + 1] ^ theirs[2 * j + 1];
            let mut v = t.c.data[j] ^ (d & t.b.data[j]) ^ (e & t.a.data[j]);
            if p.id == 0 {
                v ^= d & e;
            }
            z.push(v);
        }
        out.push(RingTensor::new(&x.shape, z));
        off += x.len();
    }
    Ok(out)
}

/// The carry circuit of x = c − r = c + ¬r + 1: returns (p, G) as XOR shares, where p is the
/// bitwise propagate c ⊕ ¬r and bit i of G is the carry out of bit i.
fn carries(p: &mut Party, x: &Share) -> Result<(RingTensor, RingTensor), ChannelError> {
    let n = x.ring.len();
    let shape = x.ring.shape.clone();
    let eda = p.preprocessing(Request::EdaBit { n })?;
    let c = open_many(p, &[&x.ring.add(&RingTensor::new(&shape, eda.a.data))])?.remove(0);
    let p0 = p.id == 0;
    // ¬r: P0 flips its share.
    let nr: Vec<u64> = eda.b.data.iter().map(|&w| if p0 { !w } else { w }).collect();
    let prop: Vec<u64> = nr.iter().zip(&c.data).map(|(&r, &c)| if p0 { r ^ c } else { r }).collect();
    let gen: Vec<u64> = nr.iter().zip(&c.data).map(|(&r, &c)| r & c).collect();
    // Carry-in 1 at bit 0: g₀ ← g₀ ∨ p₀ (= ⊕, disjoint), and the group reaching bit 0 cannot
    // propagate further, so p₀ ← 0.
    let mut g = RingTensor::new(&shape, gen.iter().zip(&prop).map(|(&g, &q)| g ^ (q & 1)).collect());
    let mut pp = RingTensor::new(&shape, prop.iter().map(|&q| q & !1).collect());
    for s in [1u32, 2, 4, 8, 16, 32] {
        let gs = g.map(|w| w << s);
        let ps = pp.map(|w| w << s);
        let r = and_many(p, &[(&pp, &gs), (&pp, &ps)])?;
        g = RingTensor::new(&shape, g.data.iter().zip(&r[0].data).map(|(a, b)| a ^ b).collect());
        pp = r[1].clone();
    }
    Ok((RingTensor::new(&shape, prop), g))
}

/// AND of two XOR-shared word tensors (one round).
pub fn and_words(p: &mut Party, x: &RingTensor, y: &RingTensor) -> Result<RingTensor, ChannelError> {
    Ok(and_many(p, &[(x, y)])?.remove(0))
}

/// Bits 0, 2, 4, … of x moved to bits 0, 1, 2, … (the rest cleared).
fn compress_even(mut x: u64) -> u64 {
    x &= 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0f0f_0f0f_0f0f_0f0f;
    x = (x | (x >> 4)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x >> 8)) & 0x0000_ffff_0000_ffff;
    (x | (x >> 16)) & 0x0000_0000_ffff_ffff
}

/// n values of w bits each (w divides 64) packed densely into words, and back.
fn pack(vals: &[u64], w: u32) -> Vec<u64> {
    let per = (64 / w) as usize;
    vals.chunks(per).map(|c| c.iter().enumerate().fold(0u64, |a, (i, &v)| a | (v << (i as u32 * w)))).collect()
}

fn unpack(words: &[u64], n: usize, w: u32) -> Vec<u64> {
    let per = (64 / w) as usize;
    let mask = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
    (0..n).map(|i| (words[i / per] >> ((i % per) as u32 * w)) & mask).collect()
}

/// One fan-in-4 carry-lookahead step on bit-sliced lane words, in one round: from the
/// (generate, propagate) pairs of four adjacent groups (index 3 the most significant) it
/// returns the merged pair
///   G = G₃ ⊕ P₃G₂ ⊕ P₃P₂G₁ ⊕ P₃P₂P₁G₀,  P = P₃P₂P₁P₀
/// (the terms are disjoint events, so ⊕ is their OR). The seven variables P₀…P₃, G₀…G₂ are
/// opened under dealer masks m, d = v ⊕ m, and each product expands over the subsets T of its
/// variables as Π(d ⊕ m) = ⊕_T (Π_{v∉T} d_v)·m_T, with XOR shares of every mask product m_T
/// (|T| ≥ 2) from the dealer — the multi-fan-in AND of Damgård et al. (TCC 2006), in one
/// round instead of the two of a binary tree. At the root only G is needed (`want_p` false).
fn and4(p: &mut Party, g: [&[u64]; 4], pr: [&[u64]; 4], want_p: bool) -> Result<(Vec<u64>, Vec<u64>), ChannelError> {
    use super::dealer::{and4_terms, AND4_PRODUCTS, AND4_VARS};
    let n = g[0].len();
    let t = p.preprocessing(Request::And4 { n })?;
    let vars: [&[u64]; AND4_VARS] = [pr[0], pr[1], pr[2], pr[3], g[0], g[1], g[2]];
    let mut mine = Vec::with_capacity(AND4_VARS * n);
    for (v, x) in vars.iter().enumerate() {
        mine.extend(x.iter().enumerate().map(|(j, &w)| w ^ t.a.data[v * n + j]));
    }
    let theirs = p.exchange(&mine)?;
    let d: Vec<u64> = mine.iter().zip(&theirs).map(|(a, b)| a ^ b).collect();
    // Expansion plan, per product: (public variables ANDed, source of the mask factor).
    let terms = and4_terms();
    let plan: Vec<Vec<(Vec<usize>, MaskSrc)>> = AND4_PRODUCTS
        .iter()
        .map(|&s| {
            let mut out = Vec::new();
            let mut sub = s;
            loop {
                let rest: Vec<usize> = (0..AND4_VARS).filter(|v| (s & !sub) >> v & 1 == 1).collect();
                let src = match sub.count_ones() {
                    0 => MaskSrc::One,
                    1 => MaskSrc::Var(sub.trailing_zeros() as usize),
                    _ => MaskSrc::Term(terms.binary_search(&sub).expect("dealer supplies every subset product")),
                };
                out.push((rest, src));
                if sub == 0 {
                    break;
                }
                sub = (sub - 1) & s;
            }
            out
        })
        .collect();
    let one = if p.id == 0 { u64::MAX } else { 0 };
    // Share of the product over one plan for lane word j.
    let product = |pl: &[(Vec<usize>, MaskSrc)], j: usize| -> u64 {
        pl.iter().fold(0u64, |acc, (rest, src)| {
            let pubs = rest.iter().fold(u64::MAX, |a, &v| a & d[v * n + j]);
            let m = match *src {
                MaskSrc::One => one,
                MaskSrc::Var(v) => t.a.data[v * n + j],
                MaskSrc::Term(ti) => t.c.data[ti * n + j],
            };
            acc ^ (pubs & m)
        })
    };
    let mut gout = Vec::with_capacity(n);
    let mut pout = Vec::with_capacity(n);
    for j in 0..n {
        gout.push(g[3][j] ^ product(&plan[0], j) ^ product(&plan[1], j) ^ product(&plan[2], j));
        pout.push(if want_p { product(&plan[3], j) } else { 0 });
    }
    Ok((gout, pout))
}

/// Where the mask factor of one term of a fan-in-4 product comes from.
#[derive(Clone, Copy)]
enum MaskSrc {
    /// The empty subset: the public product alone (P0 holds the constant 1).
    One,
    /// One variable's own mask share.
    Var(usize),
    /// A dealer-supplied product of several masks (index into `and4_terms`).
    Term(usize),
}

/// Bits j, j + 4, j + 8, … of x moved to bits 0, 1, 2, … (the rest cleared).
pub(crate) fn compress4(x: u64, j: u32) -> u64 {
    compress_even(compress_even(x >> j))
}

/// XOR shares of msb(x) (in bit 0 of each word): p₆₃ ⊕ carry₆₂, 3 rounds.
pub fn msb(p: &mut Party, x: &Share) -> Result<RingTensor, ChannelError> {
    let n = x.ring.len();
    let shape = x.ring.shape.clone();
    let eda = p.preprocessing(Request::EdaMono { n })?;
    let c = open_many(p, &[&x.ring.add(&RingTensor::new(&shape, eda.a.data.clone()))])?.remove(0);
    Ok(RingTensor::new(&shape, msb_of_difference(p, &c.data, &eda.b.data, &eda.c.data, |i| i)?))
}

/// XOR shares (bit 0) of [x ≥ tⱼ] for every element of x and every public threshold tⱼ
/// (element-major, n·m bits), 3 rounds: one opening c = x + r serves all thresholds
/// (x − tⱼ = (c − tⱼ) − r), then one carry tree per pair, whose first level is local and
/// served by the element's monomials of r for all m thresholds. Each x − tⱼ must lie in
/// (−2^63, 2^63) as a signed ring value.
pub fn ge_thresholds(p: &mut Party, x: &Share, ts: &[u64]) -> Result<Vec<u64>, ChannelError> {
    let n = x.ring.len();
    let m = ts.len();
    let eda = p.preprocessing(Request::EdaMono { n })?;
    let c = open_many(p, &[&x.ring.add(&RingTensor::new(&x.ring.shape, eda.a.data.clone()))])?.remove(0);
    let cs: Vec<u64> = (0..n * m).map(|i| c.data[i / m].wrapping_sub(ts[i % m])).collect();
    let one = p.public_term(1);
    Ok(msb_of_difference(p, &cs, &eda.b.data, &eda.c.data, |i| i / m)?.into_iter().map(|b| b ^ one).collect())
}

/// A polynomial over GF(2) in the four bits a₀…a₃ of a group, with public coefficients
/// bit-sliced over the 16 groups: entry T is the coefficient word of the monomial a_T.
type GroupPoly = [u64; 16];

/// p·(α ⊕ β·a_o) for a polynomial p not involving a_o (its monomials are subsets of the offsets
/// below o).
fn times_affine(p: &GroupPoly, o: usize, alpha: u64, beta: u64) -> GroupPoly {
    let mut out = [0u64; 16];
    for t in 0..1usize << o {
        out[t] ^= alpha & p[t];
        out[t | 1 << o] ^= beta & p[t];
    }
    out
}

/// This party's XOR share of a polynomial: ⊕_T coefficient_T ∧ [a_T].
fn share_of(p: &GroupPoly, fields: &[u64; 16]) -> u64 {
    p.iter().zip(fields).fold(0u64, |acc, (c, f)| acc ^ (c & f))
}

/// XOR shares (bit 0) of msb(cᵢ − r_{k(i)}) for public cᵢ and XOR-shared r (`rb`, with the
/// packed monomials `mono` of `Request::EdaMono`), 2 rounds.
///
/// Only the carry into bit 63 is needed, so instead of all 64 prefix carries (`carries`, 768
/// AND gates per element) a tree of (generate, propagate) groups quarters the width at each of
/// its three levels (64 → 16 → 4 → 1). Position 63 is the identity group (G = 0, P = 1), so the
/// root is the carry out of bits 0…62, with the carry-in 1 of c + ¬r + 1 folded into bit 0.
///
/// The first level is **local**: with c public, every bit's generate g = c·a and propagate
/// p = c ⊕ a are affine in a = ¬r's bit (bit 0: g = c ⊕ ¬c·a, p = 0; bit 63: g = 0, p = 1), so a
/// group's G = g₃ ⊕ p₃g₂ ⊕ p₃p₂g₁ ⊕ p₃p₂p₁g₀ and P = p₃p₂p₁p₀ are combinations, with public
/// coefficients, of the monomials of the group's four bits of ¬r, which the dealer shares once
/// per element (all thresholds of `ge_thresholds` use them). The other two levels are [`and4`]
/// rounds, with the level's bits packed densely into the opened words.
fn msb_of_difference(p: &mut Party, c: &[u64], rb: &[u64], mono: &[u64], k: impl Fn(usize) -> usize) -> Result<Vec<u64>, ChannelError> {
    use super::dealer::{eda_mono_words, EDA_MONOMIALS, EDA_MONOMIAL_INDEX};
    let n = c.len();
    let elements = rb.len();
    let words = eda_mono_words(elements);
    assert_eq!(mono.len(), EDA_MONOMIALS.len() * words, "msb: monomials for {elements} elements");
    let p0 = p.id == 0;
    let mut prop63 = Vec::with_capacity(n);
    let mut g = Vec::with_capacity(n);
    let mut pp = Vec::with_capacity(n);
    // This party's shares of the 16 monomials a_T of the current element (fields of 16 groups).
    let mut fields = [0u64; 16];
    let mut cached = usize::MAX;
    for i in 0..n {
        let e = k(i);
        let nr = if p0 { !rb[e] } else { rb[e] };
        if e != cached {
            for (t, f) in fields.iter_mut().enumerate() {
                *f = match (t.count_ones(), EDA_MONOMIAL_INDEX[t]) {
                    (0, _) => {
                        if p0 {
                            0xffff
                        } else {
                            0
                        }
                    }
                    (1, _) => compress4(nr, t.trailing_zeros()),
                    (_, Some(ti)) => mono[ti * words + e / 4] >> (16 * (e % 4)) & 0xffff,
                    (_, None) => unreachable!("every subset of two or more offsets is a monomial"),
                };
            }
            cached = e;
        }
        let ci = c[i];
        prop63.push((if p0 { nr ^ ci } else { nr }) >> 63);
        // Per offset o, the forms α ⊕ β·a of g = c·a and p = c ⊕ a over the 16 groups; bit 0
        // (group 0, offset 0; carry-in folded) has g = c ⊕ ¬c·a, p = 0, and bit 63 (group 15,
        // offset 3; identity) g = 0, p = 1.
        let cw: [u64; 4] = std::array::from_fn(|o| compress4(ci, o as u32));
        let (b0, b15) = (1u64, 1u64 << 15);
        let mut gb = cw;
        gb[0] = (cw[0] & !b0) | (!cw[0] & b0);
        gb[3] &= !b15;
        let ga0 = cw[0] & b0;
        let mut pa = cw;
        pa[0] &= !b0;
        pa[3] |= b15;
        let mut pb = [0xffffu64; 4];
        pb[0] &= !b0;
        pb[3] &= !b15;
        // G = g₃ ⊕ p₃(g₂ ⊕ p₂(g₁ ⊕ p₁g₀)) (Horner) and P = p₃p₂p₁p₀, as polynomials in a.
        let mut gp = [0u64; 16];
        (gp[0], gp[1]) = (ga0, gb[0]);
        let mut pp_poly = [0u64; 16];
        (pp_poly[0], pp_poly[1]) = (pa[0], pb[0]);
        for o in 1..4 {
            gp = times_affine(&gp, o, pa[o], pb[o]);
            gp[1 << o] ^= gb[o];
            pp_poly = times_affine(&pp_poly, o, pa[o], pb[o]);
        }
        g.push(share_of(&gp, &fields));
        pp.push(share_of(&pp_poly, &fields));
    }
    let mut w = 16u32;
    while w > 1 {
        let h = w / 4;
        let parts = |v: &[u64]| -> Vec<Vec<u64>> {
            (0..4).map(|j| pack(&v.iter().map(|&x| compress4(x, j)).collect::<Vec<_>>(), h)).collect()
        };
        let (gs, ps) = (parts(&g), parts(&pp));
        let (gw, pw) = and4(p, [&gs[0], &gs[1], &gs[2], &gs[3]], [&ps[0], &ps[1], &ps[2], &ps[3]], h > 1)?;
        g = unpack(&gw, n, h);
        pp = unpack(&pw, n, h);
        w = h;
    }
    Ok((0..n).map(|i| (prop63[i] ^ g[i]) & 1).collect())
}

/// One round shared by the injections: XOR-shared bits opened under daBit masks (v = b ⊕ t,
/// packed 64 per word) and arithmetic values under their masks (e = x − a). Returns the opened
/// bit words and the opened values.
fn open_bits_and_values(p: &mut Party, bits: &[u64], tb: &[u64], x: &[u64], a: &[u64]) -> Result<(Vec<u64>, Vec<u64>), ChannelError> {
    let words = bits.len().div_ceil(64);
    let mut mine = vec![0u64; words + x.len()];
    for (j, &b) in bits.iter().enumerate() {
        mine[j / 64] |= ((b ^ tb[j]) & 1) << (j % 64);
    }
    for (i, (&xi, &ai)) in x.iter().zip(a).enumerate() {
        mine[words + i] = xi.wrapping_sub(ai);
    }
    let theirs = p.exchange(&mine)?;
    let v = mine[..words].iter().zip(&theirs[..words]).map(|(m, t)| m ^ t).collect();
    let e = mine[words..].iter().zip(&theirs[words..]).map(|(m, t)| m.wrapping_add(*t)).collect();
    Ok((v, e))
}

/// Bit j of packed words.
fn bit(words: &[u64], j: usize) -> u64 {
    (words[j / 64] >> (j % 64)) & 1
}

/// [hᵢⱼ] and [hᵢⱼ·xᵢ] for XOR-shared bits hᵢⱼ (m per element, bit 0 of each word,
/// element-major) and arithmetic xᵢ, in **one** round: the bits are opened under daBits,
/// v = h ⊕ t (packed 64 per word), and x − a once per element, not once per bit (the dealer's
/// a·tⱼ products all use the same a). Then h = v + t − 2vt and
/// h·x = v·x + (1 − 2v)·(e·[t] + [a·t]) are local. Returns (h, h·x), h at scale 0 and h·x at
/// x's ring scale.
pub fn inject_many(p: &mut Party, bits: &[u64], x: &[u64], m: usize) -> Result<(Vec<u64>, Vec<u64>), ChannelError> {
    let n = x.len();
    assert_eq!(bits.len(), n * m, "inject_many: {} bits for {n} values × {m}", bits.len());
    let t = p.preprocessing(Request::InjectMany { n, m })?;
    let (ta, amask) = t.a.data.split_at(n * m);
    let (vw, e) = open_bits_and_values(p, bits, &t.b.data, x, amask)?;
    let mut h = Vec::with_capacity(n * m);
    let mut hx = Vec::with_capacity(n * m);
    for j in 0..n * m {
        let i = j / m;
        let (v, e) = (bit(&vw, j), e[i]);
        let one_m2v = 1u64.wrapping_sub(2 * v);
        h.push(p.public_term(v).wrapping_add(one_m2v.wrapping_mul(ta[j])));
        let tx = e.wrapping_mul(ta[j]).wrapping_add(t.c.data[j]);
        hx.push(v.wrapping_mul(x[i]).wrapping_add(one_m2v.wrapping_mul(tx)));
    }
    Ok((h, hx))
}

/// The largest member of each group of k values (k ≤ [`TOURNAMENT_MAX_K`]), in **one** round,
/// from XOR shares of the group's k(k−1)/2 pairwise bits [x_a ≥ x_b] (pair-major per group in
/// [`super::dealer::pair_index`] order, bit 0): member i wins when it beats every other member (ties go to
/// the lower index, [`super::dealer::tournament_literal`]), so max = Σᵢ wᵢ·xᵢ with wᵢ the AND of i's k − 1
/// literals. Each pair bit is opened under a daBit, v = g ⊕ t, and each value once as
/// e = xᵢ − aᵢ; a literal is then ℓ = u ⊕ t with public u (v, or v ⊕ 1 when negated), i.e.
/// ℓ = u + (1 − 2u)·t, and
///   wᵢ·xᵢ = Σ_S Π_{q∉S} u_q · Π_{q∈S} (1 − 2u_q) · t_S·xᵢ,   t_S·xᵢ = e·[t_S] + [t_S·aᵢ],
/// over the subsets S of the literals; only S ⊇ Z = {q : u_q = 0} contribute, with sign
/// (−1)^|S∖Z|. The dealer supplies [t_S] and [t_S·aᵢ] (`Request::Tournament`) — a fan-in-k
/// AND fused with the bit injection, so a step of fan-in k costs the comparisons' 3 rounds + 1,
/// like a pairwise step, while dividing the width by k instead of 2.
pub fn tournament_select(p: &mut Party, x: &[u64], ge: &[u64], k: usize) -> Result<Vec<u64>, ChannelError> {
    use super::dealer::{multi_subset_index, tournament_literal, tournament_sizes};
    assert!((2..=TOURNAMENT_MAX_K).contains(&k), "tournament: groups of {k}");
    let n = x.len() / k;
    let (np, nts, ntsa) = tournament_sizes(k);
    assert_eq!((x.len(), ge.len()), (n * k, n * np), "tournament: {} values, {} bits for groups of {k}", x.len(), ge.len());
    let m = p.preprocessing(Request::Tournament { n, k })?;
    let (ta, amask) = m.a.data.split_at(n * np);
    let (vw, e_all) = open_bits_and_values(p, ge, &m.b.data, x, amask)?;
    let multi = multi_subset_index(k);
    let subsets = (1usize << (k - 1)) - 1;
    let lits: Vec<Vec<(usize, bool)>> = (0..k).map(|i| (0..k - 1).map(|q| tournament_literal(k, i, q)).collect()).collect();
    let mut out = Vec::with_capacity(n);
    for g in 0..n {
        let c = &m.c.data[g * (nts + ntsa)..(g + 1) * (nts + ntsa)];
        let (cts, ctsa) = c.split_at(nts);
        let mut acc = 0u64;
        for (i, lit) in lits.iter().enumerate() {
            let xi = g * k + i;
            let e = e_all[xi];
            // Public literal values u_q and the set Z of those that are 0.
            let mut zero = 0usize;
            for (q, &(pi, neg)) in lit.iter().enumerate() {
                if bit(&vw, g * np + pi) ^ neg as u64 == 0 {
                    zero |= 1 << q;
                }
            }
            // Σ over S ⊇ Z of (−1)^|S∖Z|·t_S·xᵢ; S = free ∪ Z for every subset of the rest.
            let rest = subsets & !zero;
            let mut free = rest;
            loop {
                let s = free | zero;
                let term = match s.count_ones() {
                    0 => x[xi],
                    1 => e.wrapping_mul(ta[g * np + lit[s.trailing_zeros() as usize].0]).wrapping_add(ctsa[i * subsets + s - 1]),
                    _ => e.wrapping_mul(cts[i * (subsets - (k - 1)) + multi[s]]).wrapping_add(ctsa[i * subsets + s - 1]),
                };
                acc = if free.count_ones() % 2 == 0 { acc.wrapping_add(term) } else { acc.wrapping_sub(term) };
                if free == 0 {
                    break;
                }
                free = (free - 1) & rest;
            }
        }
        out.push(acc);
    }
    Ok(out)
}

/// Arithmetic-to-binary conversion: XOR shares of all 64 bits of x (7 rounds).
/// Sum bit i is pᵢ ⊕ carryᵢ₋₁, with the carry-in 1 at bit 0 (held by P0, as a public constant).
pub fn to_bits(p: &mut Party, x: &Share) -> Result<RingTensor, ChannelError> {
    let (prop, g) = carries(p, x)?;
    let cin = p.public_term(1);
    Ok(prop.zip_words(&g, |q, g| q ^ (g << 1) ^ cin))
}

/// Arithmetic 0/1 shares (scale 0) of an XOR-shared bit, with a daBit.
pub fn bit_to_arith(p: &mut Party, b: &RingTensor) -> Result<Share, ChannelError> {
    let n = b.len();
    let t = p.preprocessing(Request::DaBit { n })?;
    let mine: Vec<u64> = b.data.iter().zip(&t.b.data).map(|(x, y)| (x ^ y) & 1).collect();
    let theirs = p.exchange(&mine)?;
    let out = (0..n)
        .map(|i| {
            let v = (mine[i] ^ theirs[i]) & 1;
            p.public_term(v).wrapping_add(t.a.data[i]).wrapping_sub((2 * v).wrapping_mul(t.a.data[i]))
        })
        .collect();
    Ok(Share { ring: RingTensor::new(&b.shape, out), frac: 0 })
}

/// DReLU(x) = [x ≥ 0] as arithmetic 0/1 shares (scale 0).
pub fn drelu(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let m = msb(p, x)?;
    let a = bit_to_arith(p, &m)?;
    let one = p.public_term(1);
    Ok(Share { ring: a.ring.neg().add_scalar(one), frac: 0 })
}

/// XOR shares (bit 0) of [x ≥ 0] (the negated sign bit), 3 rounds.
pub fn ge_zero_bits(p: &mut Party, x: &Share) -> Result<RingTensor, ChannelError> {
    let m = msb(p, x)?;
    let one = p.public_term(1);
    Ok(m.map(|w| w ^ one))
}

/// [bᵢ·xᵢ] for XOR-shared bits bᵢ (bit 0 of each word) and arithmetic xᵢ, all pairs in **one**
/// round (bit injection with a dealer tuple: daBit t as [t]_A and [t]_B, a uniform a, [a·t]):
/// 1. open v = b ⊕ t (packed 64 bits per word) and e = x − a together;
/// 2. b = v + t − 2vt, so b·x = v·x + (1 − 2v)·t·x, and t·x = e·[t] + [a·t] is linear in the
///    shares; the result keeps x's scale (no truncation).
pub fn bit_mul_many(p: &mut Party, pairs: &[(&RingTensor, &Share)]) -> Result<Vec<Share>, ChannelError> {
    let n: usize = pairs.iter().map(|(b, x)| {
        assert_eq!(b.len(), x.ring.len(), "bit_mul: bits and values differ in length");
        b.len()
    }).sum();
    let t = p.preprocessing(Request::BitMul { n })?;
    let (ta, amask) = t.a.data.split_at(n);
    let words = n.div_ceil(64);
    let mut mine = vec![0u64; words + n];
    let mut off = 0;
    for (b, x) in pairs {
        for i in 0..b.len() {
            let j = off + i;
            mine[j / 64] |= ((b.data[i] ^ t.b.data[j]) & 1) << (j % 64);
            mine[words + j] = x.ring.data[i].wrapping_sub(amask[j]);
        }
        off += b.len();
    }
    let theirs = p.exchange(&mine)?;
    let mut out = Vec::with_capacity(pairs.len());
    let mut off = 0;
    for (b, x) in pairs {
        let z = (0..b.len())
            .map(|i| {
                let j = off + i;
                let v = ((mine[j / 64] ^ theirs[j / 64]) >> (j % 64)) & 1;
                let e = mine[words + j].wrapping_add(theirs[words + j]);
                let tx = e.wrapping_mul(ta[j]).wrapping_add(t.c.data[j]);
                v.wrapping_mul(x.ring.data[i]).wrapping_add(1u64.wrapping_sub(2 * v).wrapping_mul(tx))
            })
            .collect();
        out.push(Share { ring: RingTensor::new(&x.ring.shape, z), frac: x.frac });
        off += b.len();
    }
    Ok(out)
}

/// ReLU(x) = x·[x ≥ 0], same scale as x, 4 rounds (sign bit 3, bit injection 1).
pub fn relu(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let d = ge_zero_bits(p, x)?;
    Ok(bit_mul_many(p, &[(&d, x)])?.remove(0))
}
