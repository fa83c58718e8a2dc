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
//! |result − x/2^f| < 1.25, never a wrap).
//!
//! Operands may be affine in a truncation output (α·t + κ, public α and κ), which covers the
//! linear initial guesses and "2 − u·w"-style forms of the Newton iterations.

use super::channel::ChannelError;
use super::dealer::{Material, Request};
use super::party::{Party, Share};
use super::protocol::{open_many_high, trunc_consts, trunc_drop};
use super::ring::RingTensor;

/// An operand of [`truncate_mul`].
#[derive(Clone, Copy)]
pub enum Operand<'a> {
    /// A share available before the round.
    Ready(&'a Share),
    /// α·tᵢ + κ for the output tᵢ of the round's i-th truncation (κ a ring value at tᵢ's scale,
    /// public).
    Trunc { idx: usize, scale: u64, offset: u64 },
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
    /// 2^(63−f).
    c: u64,
    frac: u32,
}

impl Opened {
    /// This party's share of w = −rt + σ·C·msb at element i.
    fn w(&self, i: usize) -> u64 {
        self.sigma[i].wrapping_mul(self.c).wrapping_mul(self.msb[i]).wrapping_sub(self.rt[i])
    }
}

/// Truncate each `truncs[i].0` by `truncs[i].1` bits and form every product in `prods` from the
/// truncation outputs and ready shares, all in **one** round. Returns the truncated values and
/// the untruncated products (scale = sum of the operands' scales).
///
/// Products are elementwise; the second operand may have fewer elements, broadcast over runs of
/// l = len(a)/len(b) consecutive elements of the first (one factor per row). A ready operand
/// costs one opened word per element (its own mask per product); a truncation operand costs
/// nothing beyond the truncation's own opening.
pub fn truncate_mul(
    p: &mut Party,
    truncs: &[(&Share, u32)],
    prods: &[(Operand, Operand)],
) -> Result<(Vec<Share>, Vec<Share>), ChannelError> {
    let nt = truncs.len();
    assert!(nt <= super::dealer::RECENT_TRUNCS, "truncate_mul: {nt} truncations in one round; the dealer keeps {}", super::dealer::RECENT_TRUNCS);
    let mut tmats = Vec::with_capacity(nt);
    for (x, f) in truncs {
        assert!(*f > 0 && *f < 62 && x.frac >= *f, "truncate: bad shift {f} for scale {}", x.frac);
        tmats.push(p.preprocessing(Request::Trunc { n: x.ring.len(), f: *f })?);
    }
    let len = |o: &Operand| match o {
        Operand::Ready(s) => s.ring.len(),
        Operand::Trunc { idx, .. } => truncs[*idx].0.ring.len(),
    };
    // Ready operand first (the broadcast one, if any, second).
    let mut plan: Vec<(Operand, Operand, usize)> = Vec::with_capacity(prods.len());
    for &(a, b) in prods {
        let (mut a, mut b) = (a, b);
        if matches!((a, b), (Operand::Trunc { .. }, Operand::Ready(_))) && len(&a) == len(&b) {
            std::mem::swap(&mut a, &mut b);
        }
        let (na, nb) = (len(&a), len(&b));
        assert!(nb > 0 && na % nb == 0, "truncate_mul: {na} values against {nb}");
        if let (Operand::Trunc { .. }, _) = (a, b) {
            assert_eq!(na, nb, "truncate_mul: a truncation output can only be broadcast as the second operand");
        }
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
                Request::TruncPair { n, back_a: nt - 1 - ia, back_b: nt - 1 - ib }
            }
            (Operand::Trunc { .. }, Operand::Ready(_)) => unreachable!("swapped above"),
        };
        pmats.push(p.preprocessing(req)?);
    }
    // Truncation openings from bit f − 1 up (`protocol::truncate`), the products' in full.
    let mut masked: Vec<(RingTensor, u32)> = truncs
        .iter()
        .zip(&tmats)
        .map(|((x, f), m)| (x.ring.add_scalar(p.public_term(trunc_consts(*f).0)).add(&RingTensor::new(&x.ring.shape, m.a.data.clone())), trunc_drop(*f)))
        .collect();
    for ((a, b, _), m) in plan.iter().zip(&pmats) {
        if let Operand::Ready(x) = a {
            masked.push((x.ring.sub(&RingTensor::new(&x.ring.shape, m.a.data.clone())), 0));
        }
        if let Operand::Ready(y) = b {
            masked.push((y.ring.sub(&RingTensor::new(&y.ring.shape, m.b.data.clone())), 0));
        }
    }
    let opened = open_many_high(p, &masked.iter().map(|(x, k)| (x, *k)).collect::<Vec<_>>())?;
    let low = u64::MAX >> 1;
    let outs: Vec<Opened> = truncs
        .iter()
        .zip(&tmats)
        .zip(&opened)
        .map(|(((x, f), m), c)| {
            let cc = 1u64 << (63 - f);
            let unshift = trunc_consts(*f).1;
            let (mut q, mut sigma) = (Vec::with_capacity(c.len()), Vec::with_capacity(c.len()));
            for &ci in &c.data {
                let cm = ci >> 63;
                q.push(((ci & low) >> f).wrapping_add(cm.wrapping_mul(cc)).wrapping_sub(unshift));
                sigma.push(1u64.wrapping_sub(2 * cm));
            }
            Opened { q, sigma, rt: m.c.data.clone(), msb: m.b.data.clone(), c: cc, frac: x.frac - f }
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
    let mut next = nt;
    let mut products = Vec::with_capacity(plan.len());
    for ((a, b, l), m) in plan.iter().zip(&pmats) {
        let n = len(a);
        let shape = match a {
            Operand::Ready(x) => x.ring.shape.clone(),
            Operand::Trunc { idx, .. } => truncs[*idx].0.ring.shape.clone(),
        };
        let frac_of = |o: &Operand| match o {
            Operand::Ready(s) => s.frac,
            Operand::Trunc { idx, .. } => outs[*idx].frac,
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
                let o = &outs[*idx];
                (0..n)
                    .map(|i| {
                        let r = i / l;
                        let (pp, sw) = aff(*idx, *scale, *offset, r);
                        // β·w = −[rt·β] + σ·C·[msb·β]
                        let bw = o.sigma[r].wrapping_mul(o.c).wrapping_mul(m.b.data[n + i]).wrapping_sub(m.b.data[i]);
                        pt(e.data[i].wrapping_mul(pp))
                            .wrapping_add(pp.wrapping_mul(m.a.data[i]))
                            .wrapping_add(e.data[i].wrapping_mul(sw))
                            .wrapping_add(scale.wrapping_mul(bw))
                    })
                    .collect()
            }
            (Operand::Trunc { idx: ia, scale: sa, offset: ka }, Operand::Trunc { idx: ib, scale: sb, offset: kb }) => {
                let (oa, ob) = (&outs[*ia], &outs[*ib]);
                (0..n)
                    .map(|i| {
                        let (pa, wa) = aff(*ia, *sa, *ka, i);
                        let (pb, wb) = aff(*ib, *sb, *kb, i);
                        let (ca, cb) = (oa.sigma[i].wrapping_mul(oa.c), ob.sigma[i].wrapping_mul(ob.c));
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
            (Operand::Trunc { .. }, Operand::Ready(_)) => unreachable!("swapped above"),
        };
        products.push(Share { ring: RingTensor::new(&shape, data), frac });
    }
    Ok((tshares, products))
}
