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
//! Rounds: DReLU 8 (7 + daBit conversion), ReLU 8: the XOR-shared sign bit is injected straight
//! into the product (`bit_mul_many`: one round opens b ⊕ t and x − a together), so the bit is
//! never converted separately. The same carry circuit gives full arithmetic-to-binary conversion
//! (`to_bits`, 7 rounds).

use super::channel::ChannelError;
use super::dealer::Request;
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

/// AND of XOR-shared w-bit values, several pairs in one round, packed 64/w values per word.
fn and_packed(p: &mut Party, pairs: &[(&[u64], &[u64])], w: u32) -> Result<Vec<Vec<u64>>, ChannelError> {
    let packed: Vec<(RingTensor, RingTensor)> = pairs
        .iter()
        .map(|(x, y)| {
            let (a, b) = (pack(x, w), pack(y, w));
            (RingTensor::new(&[a.len()], a), RingTensor::new(&[b.len()], b))
        })
        .collect();
    let refs: Vec<(&RingTensor, &RingTensor)> = packed.iter().map(|(a, b)| (a, b)).collect();
    let out = and_many(p, &refs)?;
    Ok(out.iter().zip(pairs).map(|(o, (x, _))| unpack(&o.data, x.len(), w)).collect())
}

/// XOR shares of msb(x) (in bit 0 of each word): p₆₃ ⊕ carry₆₂, 7 rounds.
///
/// Only the carry into bit 63 is needed, so instead of all 64 prefix carries (`carries`, 768 AND
/// gates per element) a tree of (generate, propagate) groups halves the width at each of its six
/// levels — G = G_hi ⊕ P_hi·G_lo, P = P_hi·P_lo, the top level without P — 125 AND gates per
/// element, with the level's bits packed densely into the opened words: about 5 words per
/// element and comparison instead of 25. Position 63 is the identity group (G = 0, P = 1), so
/// the root is the carry out of bits 0…62.
pub fn msb(p: &mut Party, x: &Share) -> Result<RingTensor, ChannelError> {
    let n = x.ring.len();
    let shape = x.ring.shape.clone();
    let eda = p.preprocessing(Request::EdaBit { n })?;
    let c = open_many(p, &[&x.ring.add(&RingTensor::new(&shape, eda.a.data))])?.remove(0);
    let p0 = p.id == 0;
    let top = 1u64 << 63;
    let mut prop63 = Vec::with_capacity(n);
    let mut g = Vec::with_capacity(n);
    let mut pp = Vec::with_capacity(n);
    for i in 0..n {
        let nr = if p0 { !eda.b.data[i] } else { eda.b.data[i] };
        let prop = if p0 { nr ^ c.data[i] } else { nr };
        let gen = nr & c.data[i];
        prop63.push(prop >> 63);
        // Carry-in 1 at bit 0 (as in `carries`), identity group at bit 63.
        g.push((gen ^ (prop & 1)) & !top);
        pp.push((prop & !1 & !top) | if p0 { top } else { 0 });
    }
    let mut w = 64u32;
    while w > 1 {
        let h = w / 2;
        let split = |v: &[u64]| -> (Vec<u64>, Vec<u64>) {
            (v.iter().map(|&x| compress_even(x >> 1)).collect(), v.iter().map(|&x| compress_even(x)).collect())
        };
        let (ghi, glo) = split(&g);
        let (phi, plo) = split(&pp);
        if h == 1 {
            let t = and_packed(p, &[(&phi, &glo)], h)?;
            g = ghi.iter().zip(&t[0]).map(|(a, b)| a ^ b).collect();
        } else {
            let t = and_packed(p, &[(&phi, &glo), (&phi, &plo)], h)?;
            g = ghi.iter().zip(&t[0]).map(|(a, b)| a ^ b).collect();
            pp = t[1].clone();
        }
        w = h;
    }
    Ok(RingTensor::new(&shape, (0..n).map(|i| (prop63[i] ^ g[i]) & 1).collect()))
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

/// XOR shares (bit 0) of [x ≥ 0] (the negated sign bit), 7 rounds.
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

/// ReLU(x) = x·[x ≥ 0], same scale as x, 8 rounds (sign bit 7, bit injection 1).
pub fn relu(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let d = ge_zero_bits(p, x)?;
    Ok(bit_mul_many(p, &[(&d, x)])?.remove(0))
}
