//! Truncation fused with the products that consume its output: one round instead of two.
//!
//! A truncation (`protocol::truncate`) opens c = x + B + r (from bit f − 1 up, B ≈ 2^62) and returns
//!   t = Q + w,  Q = ((c mod 2^63) >> f) + m_c·2^(63−f) − (2^(62−f) − 1)  (public, m_c = msb(c)),
//!               w = −[rt] + σ·2^(63−f)·[msb r],  σ = 1 − 2m_c ∈ {1, −1}  (public sign),
//! so t is a public value plus a **linear combination of dealer-known secrets** (rt, msb r)
//! whose coefficients become public in the same round. A product t·z therefore needs no
//! opening of t: with z = E + β (E = z − β opened in the truncation's round),
//!   t·z = Q·E + Q·[β] + E·[w] + (β·w),  β·w = −[rt·β] + σ·2^(63−f)·[msb·β],
//! where the dealer supplies shares of rt·β and msb·β (`Request::TruncMul`); and for two
//! truncation outputs, w·w′ expands over the four cross products of (rt, msb) and (rt′, msb′)
//! (`Request::TruncPair`). Everything is exact ring arithmetic: the product equals the Beaver
//! product of the truncated values, and the truncation keeps its guarantees (x ∈ [−2^62 + 2^(f+1), 2^62):
//! |result − x/2^f| < 1.25, never a wrap). A truncation in a narrower ring of w bits
//! (`protocol::Shift`) reads 63 as w − 1 throughout: only c mod 2^w is opened.
//!
//! Operands may be affine in a truncation output (α·t + κ, public α and κ), which covers the
//! linear initial guesses and "2 − u·w"-style forms of the Newton iterations.
//!
//! A per-row second operand (one value per run of l elements of the first) works with either
//! kind of first operand: a ready x [n] against a per-row truncation output (`Request::TruncMul`),
//! a truncation output t [n] against a per-row ready y (`Request::TruncMulWide`: y is opened
//! once per row, and the dealer shares rt·β and msb·β per element of t) or against a per-row
//! truncation output (`Request::TruncPair` with a broadcast length). So a long value that is
//! scaled per row need not be opened when it is itself truncated in that round (LayerNorm's
//! (x − μ)·γ, 2Quad attention's context).
//!
//! Powers work the same way ([`truncate_mul_pow`]): with msb² = msb, tᵏ = (Q + w)ᵏ is Qᵏ plus a
//! combination, with coefficients public after the opening, of the 2k monomials rt¹…rtᵏ and
//! msb·rt⁰…msb·rtᵏ⁻¹, which the dealer shares (`Request::TruncPow`, with their products by the
//! other factor's secrets). So u·y² or u·y³ of a freshly truncated y costs no extra round: a
//! Newton step for 1/x or 1/√x is one round. The dealer's material grows with k (4k or 6k
//! words per element), which is negligible for the per-row values these steps run on.

use super::channel::ChannelError;
use super::dealer::{Material, Request};
use super::party::{Party, Share};
use super::protocol::{open_many_high, trunc_consts, trunc_drop, Shift, VecShare};
use super::ring::RingTensor;

/// An operand of [`truncate_mul`].
#[derive(Clone, Copy)]
pub enum Operand<'a> {
    /// A share available before the round.
    Ready(&'a Share),
    /// α·tᵢ + κ for the output tᵢ of the round's i-th truncation (κ a ring value at tᵢ's scale,
    /// public).
    Trunc { idx: usize, scale: u64, offset: u64 },
    /// A prepared weight vector [h] with its fixed mask (`protocol::prepare_vector`), broadcast
    /// over the columns of the first operand ([n/h, h], a truncation output): costs no opening.
    Fixed(&'a VecShare),
}

impl Operand<'_> {
    /// The i-th truncation output itself.
    pub fn t(idx: usize) -> Self {
        Operand::Trunc { idx, scale: 1, offset: 0 }
    }
}

/// A truncation output as public part + secret linear part.
struct Opened {
    /// Q per element (public).
    q: Vec<u64>,
    /// σ per element (1 or −1 as a ring value).
    sigma: Vec<u64>,
    /// This party's shares of rt and msb(r).
    rt: Vec<u64>,
    msb: Vec<u64>,
    /// 2^(w−1−f) (w = 64 unless the truncation runs in a narrower ring).
    c: u64,
    frac: u32,
}

impl Opened {
    /// This party's share of w = −rt + σ·C·msb at element i.
    fn w(&self, i: usize) -> u64 {
        self.sigma[i].wrapping_mul(self.c).wrapping_mul(self.msb[i]).wrapping_sub(self.rt[i])
    }
}

/// One element of an affine truncation operand α·t + κ = pp + α·w (pp public, sw = this
/// party's share of α·w, w = −rt + σ·C·msb with sc = σ·C public).
struct TruncPart {
    pp: u64,
    sw: u64,
    scale: u64,
    sc: u64,
}

impl TruncPart {
    /// This party's share of its product with y = e + β (e public, β masked; the dealer's
    /// shares of rt·β and msb·β): e·pp (P0) + pp·[β] + e·[α·w] + α·(σC·[msb·β] − [rt·β]).
    fn times(&self, id: usize, e: u64, beta: u64, rt_beta: u64, msb_beta: u64) -> u64 {
        let bw = self.sc.wrapping_mul(msb_beta).wrapping_sub(rt_beta);
        super::party::public_term_of(id, e.wrapping_mul(self.pp))
            .wrapping_add(self.pp.wrapping_mul(beta))
            .wrapping_add(e.wrapping_mul(self.sw))
            .wrapping_add(self.scale.wrapping_mul(bw))
    }
}

/// Truncate each `truncs[i].0` by `truncs[i].1` (bits, or a `Shift` in a narrower ring) and form every product in `prods` from the
/// truncation outputs and ready shares, all in **one** round. Returns the truncated values and
/// the untruncated products (scale = sum of the operands' scales).
///
/// Products are elementwise; the second operand may have fewer elements, broadcast over runs of
/// l = len(a)/len(b) consecutive elements of the first (one factor per row). A ready operand
/// costs one opened word per element (its own mask per product); a truncation operand costs
/// nothing beyond the truncation's own opening.
pub fn truncate_mul<S: Into<Shift> + Copy>(
    p: &mut Party,
    truncs: &[(&Share, S)],
    prods: &[(Operand, Operand)],
) -> Result<(Vec<Share>, Vec<Share>), ChannelError> {
    let (t, pr, _) = truncate_mul_pow(p, truncs, prods, &[])?;
    Ok((t, pr))
}

/// A power product of [`truncate_mul_pow`]: `a`·tᵏ for the output t of the round's `b`-th
/// truncation, with `a` a ready share or (`Operand::t(i)`) another truncation output of the
/// round, elementwise (same length, no affine forms).
#[derive(Clone, Copy)]
pub struct PowProduct<'a> {
    pub a: Operand<'a>,
    pub b: usize,
    pub k: u32,
}

/// Binomial coefficient C(n, k) for the small powers of [`PowProduct`].
fn binom(n: u32, k: u32) -> u64 {
    (0..k).fold(1u64, |acc, i| acc * (n - i) as u64 / (i + 1) as u64)
}

/// Public coefficients of tᵏ = (Q + w)ᵏ, w = −rt + s·msb (s = σ·2^(63−f)), over 1 and the
/// monomials of `dealer::trunc_pow_monomials`: (Qᵏ, [coefficient of each monomial]). With
/// msb² = msb, wʲ = (−rt)ʲ + msb·Σ_{i≥1} C(j,i)(−rt)^(j−i) sⁱ, so rtᵉ carries C(k,e)Q^(k−e)(−1)ᵉ
/// and msb·rtᵉ carries (−1)ᵉ Σ_{j>e} C(k,j) Q^(k−j) C(j,e) s^(j−e).
fn pow_coeffs(q: u64, s: u64, k: u32) -> (u64, Vec<u64>) {
    let neg = |e: u32, v: u64| if e % 2 == 1 { v.wrapping_neg() } else { v };
    let pure = (1..=k).map(|e| neg(e, binom(k, e).wrapping_mul(q.wrapping_pow(k - e))));
    let with_msb = (0..k).map(|e| {
        let sum = (e + 1..=k).fold(0u64, |acc, j| {
            acc.wrapping_add(binom(k, j).wrapping_mul(q.wrapping_pow(k - j)).wrapping_mul(binom(j, e)).wrapping_mul(s.wrapping_pow(j - e)))
        });
        neg(e, sum)
    });
    (q.wrapping_pow(k), pure.chain(with_msb).collect())
}

/// [`truncate_mul`] plus power products a·tᵏ (`pows`), still one round: tᵏ needs no opening (its
/// public coefficients become known with the truncation's opening, and the dealer supplies the
/// monomials of the truncation's secrets, `Request::TruncPow`), a ready `a` one opened word per
/// element. Returns (truncations, products, power products); a power product's scale is
/// scale(a) + k·scale(t). A Newton step that needs u·y² or u·y³ of a freshly truncated y is
/// thereby one round instead of two or three.
pub fn truncate_mul_pow<S: Into<Shift> + Copy>(
    p: &mut Party,
    truncs: &[(&Share, S)],
    prods: &[(Operand, Operand)],
    pows: &[PowProduct],
) -> Result<(Vec<Share>, Vec<Share>, Vec<Share>), ChannelError> {
    let nt = truncs.len();
    assert!(nt <= super::dealer::RECENT_TRUNCS, "truncate_mul: {nt} truncations in one round; the dealer keeps {}", super::dealer::RECENT_TRUNCS);
    let truncs: Vec<(&Share, Shift)> = truncs.iter().map(|(x, s)| (*x, (*s).into())).collect();
    let mut tmats = Vec::with_capacity(nt);
    for (x, s) in &truncs {
        let f = s.f;
        assert!(f > 0 && f < 62 && x.frac >= f, "truncate: bad shift {f} for scale {}", x.frac);
        tmats.push(p.preprocessing(Request::Trunc { n: x.ring.len(), f, width: s.width })?);
    }
    let len = |o: &Operand| match o {
        Operand::Ready(s) => s.ring.len(),
        Operand::Trunc { idx, .. } => truncs[*idx].0.ring.len(),
        Operand::Fixed(v) => v.masked.len(),
    };
    // Ready operand first (the broadcast one, if any, second).
    let mut plan: Vec<(Operand, Operand, usize)> = Vec::with_capacity(prods.len());
    for &(a, b) in prods {
        let (mut a, mut b) = (a, b);
        if matches!((a, b), (Operand::Trunc { .. }, Operand::Ready(_))) && len(&a) == len(&b) || matches!(a, Operand::Fixed(_)) {
            std::mem::swap(&mut a, &mut b);
        }
        let (na, nb) = (len(&a), len(&b));
        assert!(nb > 0 && na % nb == 0, "truncate_mul: {na} values against {nb}");
        plan.push((a, b, na / nb));
    }
    let mut pmats: Vec<Material> = Vec::with_capacity(plan.len());
    for (a, b, l) in &plan {
        let n = len(a);
        let req = match (a, b) {
            (Operand::Ready(_), Operand::Ready(_)) if *l == 1 => Request::Mul { n },
            (Operand::Ready(_), Operand::Ready(y)) => Request::RowMul { rows: y.ring.len(), l: *l },
            (Operand::Ready(_), Operand::Trunc { idx, .. }) => Request::TruncMul { n, back: nt - 1 - idx, l: *l },
            (Operand::Trunc { idx: ia, .. }, Operand::Trunc { idx: ib, .. }) => {
                Request::TruncPair { n, back_a: nt - 1 - ia, back_b: nt - 1 - ib, l: *l }
            }
            (Operand::Trunc { idx, .. }, Operand::Ready(_)) => Request::TruncMulWide { n, back: nt - 1 - idx, l: *l },
            (Operand::Trunc { idx, .. }, Operand::Fixed(v)) => Request::TruncMulVec { n, back: nt - 1 - idx, id: v.id },
            (_, Operand::Fixed(_)) | (Operand::Fixed(_), _) => panic!("truncate_mul: a prepared vector multiplies a truncation output only"),
        };
        pmats.push(p.preprocessing(req)?);
    }
    let mut wmats: Vec<Material> = Vec::with_capacity(pows.len());
    for pw in pows {
        let n = truncs[pw.b].0.ring.len();
        assert!(pw.k >= 1 && pw.k <= super::dealer::TRUNC_POW_MAX_K, "truncate_mul_pow: power {}", pw.k);
        let with = match pw.a {
            Operand::Ready(x) => {
                assert_eq!(x.ring.len(), n, "truncate_mul_pow: {} values against {n}", x.ring.len());
                None
            }
            Operand::Trunc { idx, scale: 1, offset: 0 } => {
                assert_eq!(truncs[idx].0.ring.len(), n, "truncate_mul_pow: truncations of different lengths");
                assert_ne!(idx, pw.b, "truncate_mul_pow: t·tᵏ is the power k + 1");
                Some(nt - 1 - idx)
            }
            Operand::Trunc { .. } => panic!("truncate_mul_pow: affine truncation operands are not supported"),
            Operand::Fixed(_) => panic!("truncate_mul_pow: prepared vectors are not supported"),
        };
        wmats.push(p.preprocessing(Request::TruncPow { n, back: nt - 1 - pw.b, k: pw.k, with })?);
    }
    // Truncation openings from bit f − 1 up and modulo 2^width (`protocol::truncate`), the
    // products' in full.
    let mut masked: Vec<(RingTensor, u32, u32)> = truncs
        .iter()
        .zip(&tmats)
        .map(|((x, s), m)| {
            let masked = x.ring.add_scalar(p.public_term(trunc_consts(*s).0)).add(&RingTensor::new(&x.ring.shape, m.a.data.clone()));
            (masked, trunc_drop(s.f), s.width)
        })
        .collect();
    for ((a, b, _), m) in plan.iter().zip(&pmats) {
        if let Operand::Ready(x) = a {
            masked.push((x.ring.sub(&RingTensor::new(&x.ring.shape, m.a.data.clone())), 0, 64));
        }
        if let Operand::Ready(y) = b {
            masked.push((y.ring.sub(&RingTensor::new(&y.ring.shape, m.b.data.clone())), 0, 64));
        }
    }
    for (pw, m) in pows.iter().zip(&wmats) {
        if let Operand::Ready(x) = pw.a {
            masked.push((x.ring.sub(&RingTensor::new(&x.ring.shape, m.a.data.clone())), 0, 64));
        }
    }
    let opened = open_many_high(p, &masked.iter().map(|(x, k, w)| (x, *k, *w)).collect::<Vec<_>>())?;
    let outs: Vec<Opened> = truncs
        .iter()
        .zip(&tmats)
        .zip(&opened)
        .map(|(((x, s), m), c)| {
            let cc = s.carry_weight();
            let unshift = trunc_consts(*s).1;
            let (mut q, mut sigma) = (Vec::with_capacity(c.len()), Vec::with_capacity(c.len()));
            for &ci in &c.data {
                let (cm, chigh) = s.split(ci);
                q.push(chigh.wrapping_add(cm.wrapping_mul(cc)).wrapping_sub(unshift));
                sigma.push(1u64.wrapping_sub(2 * cm));
            }
            Opened { q, sigma, rt: m.c.data.clone(), msb: m.b.data.clone(), c: cc, frac: x.frac - s.f }
        })
        .collect();
    let pt = |v: u64| p.public_term(v);
    let tshares: Vec<Share> = truncs
        .iter()
        .zip(&outs)
        .map(|((x, _), o)| {
            let data = (0..o.q.len()).map(|i| pt(o.q[i]).wrapping_add(o.w(i))).collect();
            Share { ring: RingTensor::new(&x.ring.shape, data), frac: o.frac }
        })
        .collect();
    // Public part, secret share and scale of an affine truncation operand at element i.
    let aff = |idx: usize, scale: u64, offset: u64, i: usize| -> (u64, u64) {
        let o = &outs[idx];
        (scale.wrapping_mul(o.q[i]).wrapping_add(offset), scale.wrapping_mul(o.w(i)))
    };
    let part = |idx: usize, scale: u64, offset: u64, i: usize| {
        let (pp, sw) = aff(idx, scale, offset, i);
        TruncPart { pp, sw, scale, sc: outs[idx].sigma[i].wrapping_mul(outs[idx].c) }
    };
    let mut next = nt;
    let mut products = Vec::with_capacity(plan.len());
    for ((a, b, l), m) in plan.iter().zip(&pmats) {
        let n = len(a);
        let shape = match a {
            Operand::Ready(x) => x.ring.shape.clone(),
            Operand::Trunc { idx, .. } => truncs[*idx].0.ring.shape.clone(),
            Operand::Fixed(_) => unreachable!("a prepared vector is the second operand"),
        };
        let frac_of = |o: &Operand| match o {
            Operand::Ready(s) => s.frac,
            Operand::Trunc { idx, .. } => outs[*idx].frac,
            Operand::Fixed(v) => v.frac,
        };
        let frac = frac_of(a) + frac_of(b);
        let data: Vec<u64> = match (a, b) {
            (Operand::Ready(_), Operand::Ready(_)) => {
                let (e, f) = (&opened[next], &opened[next + 1]);
                next += 2;
                (0..n)
                    .map(|i| {
                        let r = i / l;
                        let (bb, fr) = (m.b.data[r], f.data[r]);
                        let v = m.c.data[i].wrapping_add(e.data[i].wrapping_mul(bb)).wrapping_add(m.a.data[i].wrapping_mul(fr));
                        v.wrapping_add(pt(e.data[i].wrapping_mul(fr)))
                    })
                    .collect()
            }
            (Operand::Ready(_), Operand::Trunc { idx, scale, offset }) => {
                let e = &opened[next];
                next += 1;
                (0..n).map(|i| part(*idx, *scale, *offset, i / l).times(p.id, e.data[i], m.a.data[i], m.b.data[i], m.b.data[n + i])).collect()
            }
            (Operand::Trunc { idx, scale, offset }, Operand::Ready(_)) => {
                // t·y with y [n/l] broadcast: y = E + β, t = P + w (P public, w = −rt + σC·msb):
                // t·y = P·E + P·[β] + E·[w] + [β·w], β·w = −[rt·β] + σ·C·[msb·β].
                let e = &opened[next];
                next += 1;
                (0..n).map(|i| part(*idx, *scale, *offset, i).times(p.id, e.data[i / l], m.b.data[i / l], m.c.data[i], m.c.data[n + i])).collect()
            }
            (Operand::Trunc { idx, scale, offset }, Operand::Fixed(v)) => {
                // t·γ with γ = G + B (G = γ − B public, B the vector's fixed mask) per column:
                // t·γ = P·G + P·[B] + G·[w] + [B·w], B·w = −[rt·B] + σ·C·[msb·B].
                let h = v.masked.len();
                (0..n).map(|i| part(*idx, *scale, *offset, i).times(p.id, v.masked.data[i % h], v.b.data[i % h], m.c.data[i], m.c.data[n + i])).collect()
            }
            (_, Operand::Fixed(_)) | (Operand::Fixed(_), _) => unreachable!("refused when planned"),
            (Operand::Trunc { idx: ia, scale: sa, offset: ka }, Operand::Trunc { idx: ib, scale: sb, offset: kb }) => {
                let (oa, ob) = (&outs[*ia], &outs[*ib]);
                (0..n)
                    .map(|i| {
                        let j = i / l;
                        let (pa, wa) = aff(*ia, *sa, *ka, i);
                        let (pb, wb) = aff(*ib, *sb, *kb, j);
                        let (ca, cb) = (oa.sigma[i].wrapping_mul(oa.c), ob.sigma[j].wrapping_mul(ob.c));
                        // w·w′ = rt·rt′ − σ′C′·rt·msb′ − σC·msb·rt′ + σσ′CC′·msb·msb′
                        let ww = m.a.data[i]
                            .wrapping_sub(cb.wrapping_mul(m.a.data[n + i]))
                            .wrapping_sub(ca.wrapping_mul(m.a.data[2 * n + i]))
                            .wrapping_add(ca.wrapping_mul(cb).wrapping_mul(m.a.data[3 * n + i]));
                        pt(pa.wrapping_mul(pb))
                            .wrapping_add(pa.wrapping_mul(wb))
                            .wrapping_add(pb.wrapping_mul(wa))
                            .wrapping_add(sa.wrapping_mul(*sb).wrapping_mul(ww))
                    })
                    .collect()
            }
        };
        products.push(Share { ring: RingTensor::new(&shape, data), frac });
    }
    let mut powers = Vec::with_capacity(pows.len());
    for (pw, m) in pows.iter().zip(&wmats) {
        let ob = &outs[pw.b];
        let n = ob.q.len();
        let nm = 2 * pw.k as usize;
        // Monomial j of element i in block `blk` of the dealer's material.
        let mono = |blk: usize, j: usize, i: usize| m.b.data[(blk * nm + j) * n + i];
        let e = match pw.a {
            Operand::Ready(_) => {
                next += 1;
                Some(&opened[next - 1])
            }
            Operand::Trunc { .. } | Operand::Fixed(_) => None,
        };
        let data: Vec<u64> = (0..n)
            .map(|i| {
                let (qk, cf) = pow_coeffs(ob.q[i], ob.sigma[i].wrapping_mul(ob.c), pw.k);
                // Σ_j cf_j·[block blk's monomial j]
                let lin = |blk: usize| cf.iter().enumerate().fold(0u64, |acc, (j, &c)| acc.wrapping_add(c.wrapping_mul(mono(blk, j, i))));
                // [tᵏ] = Qᵏ (public) + lin(0).
                let tk = lin(0);
                match (pw.a, e) {
                    // a = E + β: a·tᵏ = E·Qᵏ + E·lin(0) + Qᵏ·[β] + Σ cf·[β·M].
                    (Operand::Ready(_), Some(e)) => pt(e.data[i].wrapping_mul(qk))
                        .wrapping_add(e.data[i].wrapping_mul(tk))
                        .wrapping_add(qk.wrapping_mul(m.a.data[i]))
                        .wrapping_add(lin(1)),
                    // a = Q_a + w_a, w_a = −rt_a + s_a·msb_a: Q_a·tᵏ + Qᵏ·[w_a] + Σ cf·(s_a·[msb_a·M] − [rt_a·M]).
                    (Operand::Trunc { idx, .. }, _) => {
                        let oa = &outs[idx];
                        let sa = oa.sigma[i].wrapping_mul(oa.c);
                        pt(oa.q[i].wrapping_mul(qk))
                            .wrapping_add(oa.q[i].wrapping_mul(tk))
                            .wrapping_add(qk.wrapping_mul(oa.w(i)))
                            .wrapping_add(sa.wrapping_mul(lin(2)).wrapping_sub(lin(1)))
                    }
                    (Operand::Ready(_), None) | (Operand::Fixed(_), _) => unreachable!("a ready factor was opened; no prepared vectors"),
                }
            })
            .collect();
        let frac = match pw.a {
            Operand::Ready(x) => x.frac,
            Operand::Trunc { idx, .. } => outs[idx].frac,
            Operand::Fixed(v) => v.frac,
        } + pw.k * ob.frac;
        powers.push(Share { ring: RingTensor::new(&truncs[pw.b].0.ring.shape, data), frac });
    }
    Ok((tshares, products, powers))
}
