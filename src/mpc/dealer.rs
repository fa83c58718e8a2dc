//! The dealer: a trusted third party that only produces correlated randomness (Beaver triples,
//! truncation pairs) and never sees an opened value.
//!
//! Seed compression: at setup the dealer gives P0 one seed and P1 another. P0 derives *all* of
//! its preprocessing shares from its seed and receives nothing further; P1 derives its random
//! parts from its seed and receives one correction tensor per request (e.g. for a triple,
//! `c1 = a·b − c0`). Both the dealer and the parties walk the same request sequence (the
//! protocol program is deterministic), so the streams stay in step.

use super::channel::{from_bytes, to_bytes, Channel, ChannelError};
use super::prg::{Prg, Seed};
use super::ring::{matmul_packed, matmul_u64, PackedB, RingTensor};

/// What a party asks the dealer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Elementwise triple of n elements: a, b, c = a∘b.
    Mul { n: usize },
    /// Matrix triple: A [m,k], B [k,n], C = A·B.
    MatMul { m: usize, k: usize, n: usize },
    /// Truncation material for n elements by f bits in a ring of `width` bits (see
    /// `protocol::truncate`, `protocol::Shift`): r, msb_w(r) (bit w − 1), (r mod 2^(w−1)) >> f.
    Trunc { n: usize, f: u32, width: u32 },
    /// Square pair of n elements: a, c = a∘a.
    Square { n: usize },
    /// Register a fixed mask B [k,n] for a weight matrix under `id` (no correction needed).
    WeightMask { id: u64, k: usize, n: usize },
    /// Matrix triple against the registered mask `id`: A [m,k], C = A·B_id.
    MatMulFixed { id: u64, m: usize },
    /// edaBits: a uniform r as arithmetic shares and, as XOR shares, the same r bitwise.
    EdaBit { n: usize },
    /// XOR-shared AND triples on 64-bit words: a, b, c = a ∧ b.
    AndTriple { n: usize },
    /// daBits: a random bit t as arithmetic shares and as XOR shares (bit 0).
    DaBit { n: usize },
    /// Bit-injection material: a daBit t (arithmetic and XOR), a uniform a, and c = a·t
    /// (`compare::bit_mul_many`: [b·x] for an XOR-shared bit b in one round).
    BitMul { n: usize },
    /// A fresh embedding seed kᵢ per party (two words from its stream, no message); the dealer
    /// keeps both for the next `EmbedMask`. The seeds go to the client, who sends X − A.
    EmbedSeed,
    /// Client-masked embedding lookup against the registered table mask `id` (B [V,H]) for `m`
    /// tokens, with Aᵢ = PRG(kᵢ) [m,V] from the last `EmbedSeed`, A = A₀ + A₁: the dealer shares
    /// C = A·B.
    EmbedMask { id: u64, m: usize },
    /// Row-broadcast triple: a [rows·l], b [rows], c = a ∘ broadcast(b) (one factor per row).
    RowMul { rows: usize, l: usize },
    /// edaBits with the low-level carry material of `compare::msb_of_difference` for n
    /// elements: r arithmetic, r XOR-shared, and XOR shares of every product of two or more of
    /// the bits ¬r₄ₘ₊ₒ (o ∈ T) within each group of four bit positions m, for the subsets T of
    /// [`EDA_MONOMIALS`] — 16 bits (one per group) per element and subset, packed four elements
    /// per word. With them the first carry-lookahead level (64 → 16 groups) is local.
    EdaMono { n: usize },
    /// Fan-in-4 AND material for n lane words (`compare::and4`): XOR-shared masks of the
    /// [`AND4_VARS`] variables and of the products of every mask subset in [`and4_terms`].
    And4 { n: usize },
    /// Many-bit injection against one value per element: per element a uniform a, and per each
    /// of its m bits a daBit t (arithmetic and XOR) and c = a·t (`compare::inject_many`).
    InjectMany { n: usize, m: usize },
    /// Product of a ready value x [n] with the output of a recent truncation (`back` Trunc
    /// requests before this one; 0 = the latest), broadcast over runs of l (`fused`): a mask β
    /// for x and c = (rt·β, msb·β) with the truncation's rt = (r mod 2^63) >> f and msb(r).
    TruncMul { n: usize, back: usize, l: usize },
    /// Product of a recent truncation output t [n] (`back` as in `TruncMul`) with a ready value
    /// y [n/l], y broadcast over runs of l of t (one factor per row): a mask β [n/l] for y and
    /// (rt·β, msb·β) per element of t.
    TruncMulWide { n: usize, back: usize, l: usize },
    /// Register a fixed elementwise mask B [n] for a weight vector under `id` (LayerNorm's γ):
    /// γ − B is opened once per model.
    VecMask { id: u64, n: usize },
    /// Product of a recent truncation output t [n] (`back` as in `TruncMul`) with the registered
    /// vector γ = (γ − B) + B_id [h], broadcast over the columns of t ([n/h, h]): (rt·B, msb·B)
    /// per element of t, so nothing is opened.
    TruncMulVec { n: usize, back: usize, id: u64 },
    /// Product of two recent truncation outputs (`back_a`, `back_b` as in `TruncMul`), a [n] and
    /// b [n/l] broadcast over runs of l of a: the cross products of their (rt, msb) parts,
    /// rt·rt′, rt·msb′, msb·rt′, msb·msb′, per element of a.
    TruncPair { n: usize, back_a: usize, back_b: usize, l: usize },
    /// Tournament selection for n groups of k values (`compare::tournament_select`): per pair
    /// of the group a daBit t (arithmetic and XOR), per member i a uniform aᵢ, and for every
    /// subset S of member i's k − 1 literals the products t_S (|S| ≥ 2) and t_S·aᵢ (|S| ≥ 1).
    Tournament { n: usize, k: usize },
    /// Product of a factor with the k-th power of a recent truncation output t (`back` as in
    /// `TruncMul`; n elements each, 1 ≤ k ≤ [`TRUNC_POW_MAX_K`]), for `fused::truncate_mul_pow`.
    /// tᵏ is linear in the monomials M(k) of the truncation's secrets (rt, msb): rt¹…rtᵏ, then
    /// msb·rt⁰…msb·rtᵏ⁻¹ (msb² = msb), 2k in all ([`trunc_pow_monomials`]). The factor is a
    /// ready value (`with` = None: a mask β, then shares of M(k) and β·M(k)) or another recent
    /// truncation output (`with` = Some(back_a): shares of M(k), rt_a·M(k) and msb_a·M(k)).
    TruncPow { n: usize, back: usize, k: u32, with: Option<usize> },
}

/// Largest power of [`Request::TruncPow`].
pub const TRUNC_POW_MAX_K: u32 = 4;

/// The 2k monomials of a truncation's (rt, msb) that tᵏ is linear in, element i, monomial-major
/// order: rt¹…rtᵏ, msb·rt⁰…msb·rtᵏ⁻¹.
pub fn trunc_pow_monomials(rt: u64, msb: u64, k: u32) -> impl Iterator<Item = u64> {
    let pure = (1..=k).map(move |e| rt.wrapping_pow(e));
    let with_msb = (0..k).map(move |e| msb.wrapping_mul(rt.wrapping_pow(e)));
    pure.chain(with_msb)
}

/// How many truncations the dealer remembers for `TruncMul`/`TruncPair`: the most one fused
/// round uses (`fused::truncate_mul` refuses more), each kept as two vectors of its length.
pub const RECENT_TRUNCS: usize = 4;

/// Variables of one fan-in-4 carry-lookahead step that get masked and opened: the propagate
/// bits P₀…P₃ and generate bits G₀…G₂ of four adjacent groups (G₃ enters only linearly).
pub const AND4_VARS: usize = 7;

/// Bit sets (over the [`AND4_VARS`] variables: P₀..P₃ = bits 0..3, G₀..G₂ = bits 4..6) of the
/// four products of a fan-in-4 step — P₃G₂, P₃P₂G₁, P₃P₂P₁G₀ and P₃P₂P₁P₀.
pub const AND4_PRODUCTS: [u8; 4] = [0b100_1000, 0b010_1100, 0b001_1110, 0b000_1111];

/// The subsets (bit sets over the four offsets of a group) with two or more members, in a
/// fixed order: the monomials of `Request::EdaMono`.
pub const EDA_MONOMIALS: [u8; 11] = [0b0011, 0b0101, 0b0110, 0b0111, 0b1001, 0b1010, 0b1011, 0b1100, 0b1101, 0b1110, 0b1111];

/// Words of packed monomials for n elements (four 16-bit fields per word), per subset.
pub fn eda_mono_words(n: usize) -> usize {
    n.div_ceil(4)
}

/// Index of each 4-bit subset in [`EDA_MONOMIALS`] (None for those with fewer than two members).
pub const EDA_MONOMIAL_INDEX: [Option<usize>; 16] = {
    let mut idx = [None; 16];
    let mut i = 0;
    while i < EDA_MONOMIALS.len() {
        idx[EDA_MONOMIALS[i] as usize] = Some(i);
        i += 1;
    }
    idx
};

/// The 16-bit monomial fields of every subset in [`EDA_MONOMIALS`] for a 64-bit value a: bit m
/// of field t is the AND of a's bits 4m + o over o ∈ EDA_MONOMIALS[t].
pub fn eda_monomials(a: u64) -> [u64; 11] {
    let g: [u64; 4] = std::array::from_fn(|o| super::compare::compress4(a, o as u32));
    std::array::from_fn(|t| (0..4).filter(|o| EDA_MONOMIALS[t] >> o & 1 == 1).fold(0xffff, |acc, o| acc & g[o]))
}

/// Every subset with two or more variables of one of [`AND4_PRODUCTS`], each once, in a fixed
/// order (the dealer supplies XOR shares of the product of their masks).
pub fn and4_terms() -> Vec<u8> {
    let mut t: Vec<u8> = (1u8..128)
        .filter(|&s| s.count_ones() >= 2 && AND4_PRODUCTS.iter().any(|&p| s & p == s))
        .collect();
    t.sort_unstable();
    t
}

/// Largest group of one tournament step: member i's products cover all 2^(k−1) subsets of
/// its k − 1 comparisons, so the dealer's material grows as k·2^k per group.
pub const TOURNAMENT_MAX_K: usize = 8;

/// Index of the pair (a, b), a < b, among the k(k−1)/2 pairs of a group of k, in the order
/// (0,1), (0,2), …, (0,k−1), (1,2), …
pub fn pair_index(k: usize, a: usize, b: usize) -> usize {
    debug_assert!(a < b && b < k);
    a * (2 * k - a - 1) / 2 + (b - a - 1)
}

/// Literal q (0 ≤ q < k − 1) of member i: the pair it reads and whether it reads the pair's
/// bit [x_a ≥ x_b] negated. Member i beats j > i when xᵢ ≥ xⱼ (bit of (i, j)) and j < i when
/// xᵢ > xⱼ (negated bit of (j, i)): ties go to the lower index, so exactly one member wins.
pub fn tournament_literal(k: usize, i: usize, q: usize) -> (usize, bool) {
    let j = if q < i { q } else { q + 1 };
    if j > i {
        (pair_index(k, i, j), false)
    } else {
        (pair_index(k, j, i), true)
    }
}

/// Per group of k: (pairs, products t_S with |S| ≥ 2 over all members, products t_S·aᵢ).
pub fn tournament_sizes(k: usize) -> (usize, usize, usize) {
    let subsets = (1usize << (k - 1)) - 1;
    (k * (k - 1) / 2, k * (subsets - (k - 1)), k * subsets)
}

/// Position of each literal subset S (a bit mask over k − 1 literals) among the subsets with
/// two or more members, in increasing mask order (`usize::MAX` for the others).
pub fn multi_subset_index(k: usize) -> Vec<usize> {
    let mut next = 0;
    (0..1usize << (k - 1))
        .map(|s| {
            if s.count_ones() >= 2 {
                next += 1;
                next - 1
            } else {
                usize::MAX
            }
        })
        .collect()
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        let (tag, a, b, c) = match *self {
            Request::Mul { n } => (0u64, n as u64, 0, 0),
            Request::MatMul { m, k, n } => (1, m as u64, k as u64, n as u64),
            Request::Trunc { n, f, width } => (2, n as u64, f as u64, width as u64),
            Request::Square { n } => (3, n as u64, 0, 0),
            Request::WeightMask { id, k, n } => (4, id, k as u64, n as u64),
            Request::MatMulFixed { id, m } => (5, id, m as u64, 0),
            Request::EdaBit { n } => (6, n as u64, 0, 0),
            Request::AndTriple { n } => (7, n as u64, 0, 0),
            Request::DaBit { n } => (8, n as u64, 0, 0),
            Request::BitMul { n } => (9, n as u64, 0, 0),
            Request::EmbedMask { id, m } => (10, id, m as u64, 0),
            Request::EmbedSeed => (11, 0, 0, 0),
            Request::RowMul { rows, l } => (12, rows as u64, l as u64, 0),
            Request::And4 { n } => (13, n as u64, 0, 0),
            Request::EdaMono { n } => (21, n as u64, 0, 0),
            Request::InjectMany { n, m } => (14, n as u64, m as u64, 0),
            Request::TruncMul { n, back, l } => (15, n as u64, back as u64, l as u64),
            Request::TruncPair { n, back_a, back_b, l } => (16, n as u64, back_a as u64 | (back_b as u64) << 8, l as u64),
            Request::TruncMulWide { n, back, l } => (22, n as u64, back as u64, l as u64),
            Request::VecMask { id, n } => (17, id, n as u64, 0),
            Request::TruncMulVec { n, back, id } => (23, n as u64, back as u64, id),
            Request::Tournament { n, k } => (19, n as u64, k as u64, 0),
            // `with` travels as back_a + 1 in the second byte of the back word (0: a ready factor).
            Request::TruncPow { n, back, k, with } => (20, n as u64, back as u64 | (with.map_or(0, |a| a as u64 + 1) << 8), k as u64),
        };
        to_bytes(&[tag, a, b, c])
    }
    fn decode(b: &[u8]) -> Result<Self, ChannelError> {
        let v = from_bytes(b, 4)?;
        Ok(match v[0] {
            0 => Request::Mul { n: v[1] as usize },
            1 => Request::MatMul { m: v[1] as usize, k: v[2] as usize, n: v[3] as usize },
            2 => {
                if v[2] == 0 || v[3] > 64 || v[2] + 3 > v[3] {
                    return Err(ChannelError::Malformed(format!("truncation by {} bits in a {}-bit ring", v[2], v[3])));
                }
                Request::Trunc { n: v[1] as usize, f: v[2] as u32, width: v[3] as u32 }
            }
            3 => Request::Square { n: v[1] as usize },
            4 => Request::WeightMask { id: v[1], k: v[2] as usize, n: v[3] as usize },
            5 => Request::MatMulFixed { id: v[1], m: v[2] as usize },
            6 => Request::EdaBit { n: v[1] as usize },
            7 => Request::AndTriple { n: v[1] as usize },
            8 => Request::DaBit { n: v[1] as usize },
            9 => Request::BitMul { n: v[1] as usize },
            10 => Request::EmbedMask { id: v[1], m: v[2] as usize },
            11 => Request::EmbedSeed,
            12 => Request::RowMul { rows: v[1] as usize, l: v[2] as usize },
            13 => Request::And4 { n: v[1] as usize },
            21 => Request::EdaMono { n: v[1] as usize },
            14 => Request::InjectMany { n: v[1] as usize, m: v[2] as usize },
            15 => Request::TruncMul { n: v[1] as usize, back: v[2] as usize, l: v[3] as usize },
            16 => {
                let (back_a, back_b) = ((v[2] & 0xff) as usize, (v[2] >> 8) as usize);
                if back_a >= RECENT_TRUNCS || back_b >= RECENT_TRUNCS || v[3] == 0 {
                    return Err(ChannelError::Malformed(format!(
                        "truncation pair {back_a}/{back_b} broadcast over {} (the dealer keeps {RECENT_TRUNCS})",
                        v[3]
                    )));
                }
                Request::TruncPair { n: v[1] as usize, back_a, back_b, l: v[3] as usize }
            }
            17 => Request::VecMask { id: v[1], n: v[2] as usize },
            23 => {
                if v[2] as usize >= RECENT_TRUNCS {
                    return Err(ChannelError::Malformed(format!("vector truncation product against {} (the dealer keeps {RECENT_TRUNCS})", v[2])));
                }
                Request::TruncMulVec { n: v[1] as usize, back: v[2] as usize, id: v[3] }
            }
            22 => {
                if v[2] as usize >= RECENT_TRUNCS || v[3] == 0 {
                    return Err(ChannelError::Malformed(format!("wide truncation product against {} broadcast over {}", v[2], v[3])));
                }
                Request::TruncMulWide { n: v[1] as usize, back: v[2] as usize, l: v[3] as usize }
            }
            19 => match v[2] as usize {
                k @ 2..=TOURNAMENT_MAX_K => Request::Tournament { n: v[1] as usize, k },
                k => return Err(ChannelError::Malformed(format!("tournament groups of {k} (2 to {TOURNAMENT_MAX_K})"))),
            },
            20 => {
                let (back, with) = ((v[2] & 0xff) as usize, (v[2] >> 8) as usize);
                if back >= RECENT_TRUNCS || with > RECENT_TRUNCS || v[2] >> 16 != 0 {
                    return Err(ChannelError::Malformed(format!("truncation power against truncations {back}/{with} (the dealer keeps {RECENT_TRUNCS})")));
                }
                if v[3] == 0 || v[3] > TRUNC_POW_MAX_K as u64 {
                    return Err(ChannelError::Malformed(format!("truncation power {} (1 to {TRUNC_POW_MAX_K})", v[3])));
                }
                Request::TruncPow { n: v[1] as usize, back, k: v[3] as u32, with: with.checked_sub(1) }
            }
            t => return Err(ChannelError::Malformed(format!("unknown dealer request tag {t}"))),
        })
    }
    /// Elements of P1's correction message (`weight_cols`: columns of a registered mask).
    pub fn correction_len(&self, weight_cols: impl Fn(u64) -> usize) -> usize {
        match *self {
            Request::Mul { n } | Request::Square { n } => n,
            Request::EdaBit { n } | Request::AndTriple { n } | Request::DaBit { n } => n,
            Request::MatMul { m, n, .. } => m * n,
            Request::Trunc { n, .. } | Request::BitMul { n } => 2 * n,
            Request::EmbedMask { id, m } => m * weight_cols(id),
            Request::RowMul { rows, l } => rows * l,
            Request::And4 { n } => n * and4_terms().len(),
            Request::EdaMono { n } => n + EDA_MONOMIALS.len() * eda_mono_words(n),
            Request::InjectMany { n, m } => 2 * n * m,
            Request::TruncMul { n, .. } => 2 * n,
            Request::TruncPair { n, .. } => 4 * n,
            Request::TruncMulWide { n, .. } => 2 * n,
            Request::VecMask { .. } => 0,
            Request::TruncMulVec { n, .. } => 2 * n,
            Request::TruncPow { n, k, with: None, .. } => 4 * k as usize * n,
            Request::TruncPow { n, k, with: Some(_), .. } => 6 * k as usize * n,
            Request::Tournament { n, k } => {
                let (np, nts, ntsa) = tournament_sizes(k);
                n * (np + nts + ntsa)
            }
            Request::WeightMask { .. } | Request::EmbedSeed => 0,
            Request::MatMulFixed { id, m } => m * weight_cols(id),
        }
    }
}

/// Purpose ids of the PRG streams.
pub const STREAM_PREPROCESSING: u64 = 1;
/// Stream of an embedding mask Aᵢ expanded from a per-inference seed kᵢ.
pub const STREAM_EMBED_MASK: u64 = 2;

/// The seed kᵢ carried in two ring words (as drawn from a preprocessing stream).
pub fn seed_from_words(w: &[u64]) -> Seed {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&w[0].to_le_bytes());
    s[8..].copy_from_slice(&w[1].to_le_bytes());
    Seed(s)
}

/// Aᵢ = PRG(kᵢ) as an [m, v] ring tensor (party, dealer and client expand it identically).
pub fn embed_mask(seed_words: &[u64], m: usize, v: usize) -> RingTensor {
    Prg::new(seed_from_words(seed_words), STREAM_EMBED_MASK).ring(&[m, v])
}

/// The dealer's state: replicas of both parties' preprocessing streams.
pub struct Dealer {
    prg0: Prg,
    prg1: Prg,
    /// Registered weight masks B (the dealer alone knows them in the clear), packed once for
    /// the GEMM kernel: every inference multiplies by them again (repacking the 30522×H
    /// embedding mask per inference cost more than the product's arithmetic).
    masks: std::collections::HashMap<u64, PackedB>,
    /// Registered elementwise masks of weight vectors.
    /// Both parties' seeds of the current embedding lookup.
    embed_seeds: (Vec<u64>, Vec<u64>),
    /// (rt, msb(r)) in the clear of the latest truncations, newest first (`TruncMul`, `TruncPair`).
    recent_truncs: std::collections::VecDeque<(Vec<u64>, Vec<u64>)>,
    /// Registered weight-vector masks (`Request::VecMask`).
    vec_masks: std::collections::HashMap<u64, Vec<u64>>,
    pub bytes_sent: u64,
    pub requests: u64,
}

impl Dealer {
    /// Fresh seeds for P0 and P1 (to be sent to them once over their private links).
    pub fn new() -> (Self, Seed, Seed) {
        let (s0, s1) = (Seed::random(), Seed::random());
        let d = Dealer {
            prg0: Prg::new(s0, STREAM_PREPROCESSING),
            prg1: Prg::new(s1, STREAM_PREPROCESSING),
            masks: std::collections::HashMap::new(),
            embed_seeds: (vec![0; 2], vec![0; 2]),
            recent_truncs: std::collections::VecDeque::new(),
            vec_masks: std::collections::HashMap::new(),
            bytes_sent: 0,
            requests: 0,
        };
        (d, s0, s1)
    }

    /// P1's correction for `req`, advancing both replicas exactly as the parties will.
    pub fn correction(&mut self, req: Request) -> Vec<u64> {
        self.requests += 1;
        match req {
            Request::Mul { n } => {
                let (a0, b0, c0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n]), self.prg0.ring(&[n]));
                let (a1, b1) = (self.prg1.ring(&[n]), self.prg1.ring(&[n]));
                a0.add(&a1).mul(&b0.add(&b1)).sub(&c0).data
            }
            Request::MatMul { m, k, n } => {
                let (a0, b0, c0) = (self.prg0.ring(&[m, k]), self.prg0.ring(&[k, n]), self.prg0.ring(&[m, n]));
                let (a1, b1) = (self.prg1.ring(&[m, k]), self.prg1.ring(&[k, n]));
                let a = a0.add(&a1);
                let b = b0.add(&b1);
                RingTensor::new(&[m, n], matmul_u64(&a.data, &b.data, m, k, n)).sub(&c0).data
            }
            Request::Trunc { n, f, width } => {
                let (r0, msb0, rt0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n]), self.prg0.ring(&[n]));
                let r1 = self.prg1.ring(&[n]);
                let r = r0.add(&r1);
                let s = super::protocol::Shift { f, width };
                let (msb, rt) = (r.map(|x| s.split(x).0), r.map(|x| s.split(x).1));
                let mut out = msb.sub(&msb0).data;
                out.extend_from_slice(&rt.sub(&rt0).data);
                self.recent_truncs.push_front((rt.data, msb.data));
                self.recent_truncs.truncate(RECENT_TRUNCS);
                out
            }
            Request::TruncMul { n, back, l } => {
                let (b0, s0) = (self.prg0.ring(&[n]), self.prg0.ring(&[2 * n]));
                let b = b0.add(&self.prg1.ring(&[n]));
                let Some((rt, msb)) = self.recent_truncs.get(back) else { return vec![] };
                if rt.len() * l != n {
                    return vec![];
                }
                let mut out: Vec<u64> = (0..n).map(|i| rt[i / l].wrapping_mul(b.data[i]).wrapping_sub(s0.data[i])).collect();
                out.extend((0..n).map(|i| msb[i / l].wrapping_mul(b.data[i]).wrapping_sub(s0.data[n + i])));
                out
            }
            Request::TruncPair { n, back_a, back_b, l } => {
                let s0 = self.prg0.ring(&[4 * n]);
                let (Some((rta, ma)), Some((rtb, mb))) = (self.recent_truncs.get(back_a), self.recent_truncs.get(back_b)) else {
                    return vec![];
                };
                if rta.len() != n || rtb.len() * l != n {
                    return vec![];
                }
                let mut out = Vec::with_capacity(4 * n);
                for (x, y) in [(rta, rtb), (rta, mb), (ma, rtb), (ma, mb)] {
                    let k = out.len();
                    out.extend((0..n).map(|i| x[i].wrapping_mul(y[i / l]).wrapping_sub(s0.data[k + i])));
                }
                out
            }
            Request::VecMask { id, n } => {
                let b = self.prg0.ring(&[n]).add(&self.prg1.ring(&[n]));
                self.vec_masks.insert(id, b.data);
                vec![]
            }
            Request::TruncMulVec { n, back, id } => {
                let s0 = self.prg0.ring(&[2 * n]);
                let (Some((rt, msb)), Some(b)) = (self.recent_truncs.get(back), self.vec_masks.get(&id)) else { return vec![] };
                let h = b.len();
                if rt.len() != n || h == 0 || n % h != 0 {
                    return vec![];
                }
                let mut out: Vec<u64> = (0..n).map(|i| rt[i].wrapping_mul(b[i % h]).wrapping_sub(s0.data[i])).collect();
                out.extend((0..n).map(|i| msb[i].wrapping_mul(b[i % h]).wrapping_sub(s0.data[n + i])));
                out
            }
            Request::TruncMulWide { n, back, l } => {
                let (b0, s0) = (self.prg0.ring(&[n / l]), self.prg0.ring(&[2 * n]));
                let b = b0.add(&self.prg1.ring(&[n / l]));
                let Some((rt, msb)) = self.recent_truncs.get(back) else { return vec![] };
                if rt.len() != n || (n / l) * l != n {
                    return vec![];
                }
                let mut out: Vec<u64> = (0..n).map(|i| rt[i].wrapping_mul(b.data[i / l]).wrapping_sub(s0.data[i])).collect();
                out.extend((0..n).map(|i| msb[i].wrapping_mul(b.data[i / l]).wrapping_sub(s0.data[n + i])));
                out
            }
            Request::TruncPow { n, back, k, with } => {
                let m = 2 * k as usize;
                let beta = with.is_none().then(|| self.prg0.ring(&[n]).add(&self.prg1.ring(&[n])));
                let s0 = self.prg0.ring(&[if with.is_none() { 2 * m * n } else { 3 * m * n }]);
                let Some((rt, msb)) = self.recent_truncs.get(back) else { return vec![] };
                let other = match with {
                    Some(a) => match self.recent_truncs.get(a) {
                        Some(t) => Some(t),
                        None => return vec![],
                    },
                    None => None,
                };
                if rt.len() != n || other.is_some_and(|(rta, _)| rta.len() != n) {
                    return vec![];
                }
                // Monomial-major: value j of element i at j·n + i.
                let mono: Vec<Vec<u64>> = (0..n).map(|i| trunc_pow_monomials(rt[i], msb[i], k).collect()).collect();
                let mut out = Vec::with_capacity(s0.len());
                let mut block = |fac: &dyn Fn(usize) -> u64| {
                    for j in 0..m {
                        out.extend((0..n).map(|i| fac(i).wrapping_mul(mono[i][j])));
                    }
                };
                block(&|_| 1);
                match (beta.as_ref(), other) {
                    (Some(b), _) => block(&|i| b.data[i]),
                    (None, Some((rta, ma))) => {
                        block(&|i| rta[i]);
                        block(&|i| ma[i]);
                    }
                    (None, None) => unreachable!("a factor either way"),
                }
                out.iter_mut().zip(&s0.data).for_each(|(o, s)| *o = o.wrapping_sub(*s));
                out
            }
            Request::Square { n } => {
                let (a0, c0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n]));
                let a = a0.add(&self.prg1.ring(&[n]));
                a.mul(&a).sub(&c0).data
            }
            Request::WeightMask { id, k, n } => {
                let b = self.prg0.ring(&[k, n]).add(&self.prg1.ring(&[k, n]));
                self.masks.insert(id, PackedB::new(&b.data, k, n));
                vec![]
            }
            Request::MatMulFixed { id, m } => {
                let Some(b) = self.masks.get(&id) else {
                    // Unknown handle: a protocol bug on the parties' side; answer nothing usable.
                    return vec![];
                };
                let (k, n) = b.dims();
                let (a0, c0) = (self.prg0.ring(&[m, k]), self.prg0.ring(&[m, n]));
                let a = a0.add(&self.prg1.ring(&[m, k]));
                RingTensor::new(&[m, n], matmul_packed(&a.data, m, b)).sub(&c0).data
            }
            Request::EdaBit { n } => {
                let (r0, rb0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n]));
                let r = r0.add(&self.prg1.ring(&[n]));
                r.data.iter().zip(&rb0.data).map(|(r, b)| r ^ b).collect()
            }
            Request::AndTriple { n } => {
                let (a0, b0, c0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n]), self.prg0.ring(&[n]));
                let (a1, b1) = (self.prg1.ring(&[n]), self.prg1.ring(&[n]));
                (0..n).map(|i| ((a0.data[i] ^ a1.data[i]) & (b0.data[i] ^ b1.data[i])) ^ c0.data[i]).collect()
            }
            Request::DaBit { n } => {
                let (ta0, tb0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n]).map(|x| x & 1));
                let tb1 = self.prg1.ring(&[n]).map(|x| x & 1);
                (0..n).map(|i| (tb0.data[i] ^ tb1.data[i]).wrapping_sub(ta0.data[i])).collect()
            }
            Request::BitMul { n } => {
                let (ta0, tb0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n]).map(|x| x & 1));
                let (a0, c0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n]));
                let (tb1, a1) = (self.prg1.ring(&[n]).map(|x| x & 1), self.prg1.ring(&[n]));
                let t: Vec<u64> = (0..n).map(|i| tb0.data[i] ^ tb1.data[i]).collect();
                let mut out: Vec<u64> = (0..n).map(|i| t[i].wrapping_sub(ta0.data[i])).collect();
                out.extend((0..n).map(|i| a0.data[i].wrapping_add(a1.data[i]).wrapping_mul(t[i]).wrapping_sub(c0.data[i])));
                out
            }
            Request::RowMul { rows, l } => {
                let (a0, b0, c0) = (self.prg0.ring(&[rows * l]), self.prg0.ring(&[rows]), self.prg0.ring(&[rows * l]));
                let (a1, b1) = (self.prg1.ring(&[rows * l]), self.prg1.ring(&[rows]));
                let (a, b) = (a0.add(&a1), b0.add(&b1));
                (0..rows * l).map(|i| a.data[i].wrapping_mul(b.data[i / l]).wrapping_sub(c0.data[i])).collect()
            }
            Request::EdaMono { n } => {
                let w = eda_mono_words(n);
                let (r0, rb0, mono0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n]), self.prg0.ring(&[EDA_MONOMIALS.len() * w]));
                let r = r0.add(&self.prg1.ring(&[n]));
                let mut out: Vec<u64> = r.data.iter().zip(&rb0.data).map(|(r, b)| r ^ b).collect();
                let mut words = vec![0u64; EDA_MONOMIALS.len() * w];
                for (e, &re) in r.data.iter().enumerate() {
                    for (ti, f) in eda_monomials(!re).into_iter().enumerate() {
                        words[ti * w + e / 4] |= f << (16 * (e % 4));
                    }
                }
                out.extend(words.iter().zip(&mono0.data).map(|(v, s)| v ^ s));
                out
            }
            Request::And4 { n } => {
                let (m0, p0) = (self.prg0.ring(&[AND4_VARS * n]), self.prg0.ring(&[and4_terms().len() * n]));
                let m = m0.zip_words(&self.prg1.ring(&[AND4_VARS * n]), |a, b| a ^ b);
                let mut out = Vec::with_capacity(p0.len());
                for (ti, &t) in and4_terms().iter().enumerate() {
                    for j in 0..n {
                        let prod = (0..AND4_VARS).filter(|v| t >> v & 1 == 1).fold(u64::MAX, |a, v| a & m.data[v * n + j]);
                        out.push(prod ^ p0.data[ti * n + j]);
                    }
                }
                out
            }
            Request::InjectMany { n, m } => {
                let (ta0, tb0) = (self.prg0.ring(&[n * m]), self.prg0.ring(&[n * m]).map(|x| x & 1));
                let (a0, c0) = (self.prg0.ring(&[n]), self.prg0.ring(&[n * m]));
                let (tb1, a1) = (self.prg1.ring(&[n * m]).map(|x| x & 1), self.prg1.ring(&[n]));
                let t: Vec<u64> = (0..n * m).map(|i| tb0.data[i] ^ tb1.data[i]).collect();
                let mut out: Vec<u64> = (0..n * m).map(|i| t[i].wrapping_sub(ta0.data[i])).collect();
                out.extend((0..n * m).map(|i| a0.data[i / m].wrapping_add(a1.data[i / m]).wrapping_mul(t[i]).wrapping_sub(c0.data[i])));
                out
            }
            Request::Tournament { n, k } => {
                let (np, nts, ntsa) = tournament_sizes(k);
                let (ta0, tb0) = (self.prg0.ring(&[n * np]), self.prg0.ring(&[n * np]).map(|x| x & 1));
                let (a0, c0) = (self.prg0.ring(&[n * k]), self.prg0.ring(&[n * (nts + ntsa)]));
                let (tb1, a1) = (self.prg1.ring(&[n * np]).map(|x| x & 1), self.prg1.ring(&[n * k]));
                let t: Vec<u64> = (0..n * np).map(|i| tb0.data[i] ^ tb1.data[i]).collect();
                let mut out: Vec<u64> = (0..n * np).map(|i| t[i].wrapping_sub(ta0.data[i])).collect();
                let lits: Vec<Vec<usize>> = (0..k).map(|i| (0..k - 1).map(|q| tournament_literal(k, i, q).0).collect()).collect();
                let mut c = Vec::with_capacity(n * (nts + ntsa));
                for g in 0..n {
                    let tg = &t[g * np..(g + 1) * np];
                    let mut tsa = Vec::with_capacity(ntsa);
                    for (i, lit) in lits.iter().enumerate() {
                        let a = a0.data[g * k + i].wrapping_add(a1.data[g * k + i]);
                        for s in 1usize..1 << (k - 1) {
                            let ts = (0..k - 1).filter(|q| s >> q & 1 == 1).fold(1u64, |acc, q| acc & tg[lit[q]]);
                            if s.count_ones() >= 2 {
                                c.push(ts);
                            }
                            tsa.push(ts.wrapping_mul(a));
                        }
                    }
                    c.extend(tsa);
                }
                out.extend(c.iter().zip(&c0.data).map(|(v, r)| v.wrapping_sub(*r)));
                out
            }
            Request::EmbedSeed => {
                self.embed_seeds = (self.prg0.ring(&[2]).data, self.prg1.ring(&[2]).data);
                vec![]
            }
            Request::EmbedMask { id, m } => {
                let Some(b) = self.masks.get(&id) else {
                    return vec![];
                };
                let (v, h) = b.dims();
                let c0 = self.prg0.ring(&[m, h]);
                let a = embed_mask(&self.embed_seeds.0, m, v).add(&embed_mask(&self.embed_seeds.1, m, v));
                RingTensor::new(&[m, h], matmul_packed(&a.data, m, b)).sub(&c0).data
            }
        }
    }

    /// Fresh seeds for both parties' streams, keeping the registered weight masks: a long-lived
    /// deployment calls this before every inference, so no preprocessing stream outlives one
    /// query (an aborted query leaves nothing half-consumed behind), while the masks B of the
    /// weights opened once at preparation stay valid.
    pub fn reseed(&mut self) -> (Seed, Seed) {
        let (s0, s1) = (Seed::random(), Seed::random());
        self.prg0 = Prg::new(s0, STREAM_PREPROCESSING);
        self.prg1 = Prg::new(s1, STREAM_PREPROCESSING);
        self.embed_seeds = (vec![0; 2], vec![0; 2]);
        self.recent_truncs.clear();
        (s0, s1)
    }

    /// Answer one encoded request from P1 with its encoded correction (what `serve` does per
    /// message, for servers that interleave requests with their own control traffic).
    pub fn answer(&mut self, msg: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let req = Request::decode(msg)?;
        let corr = to_bytes(&self.correction(req));
        self.bytes_sent += corr.len() as u64;
        Ok(corr)
    }

    /// Serve P1's requests until it hangs up.
    pub fn serve(mut self, p1: &mut dyn Channel) -> Self {
        while let Ok(msg) = p1.recv() {
            let Ok(req) = Request::decode(&msg) else { break };
            let corr = to_bytes(&self.correction(req));
            self.bytes_sent += corr.len() as u64;
            if p1.send(corr).is_err() {
                break;
            }
        }
        self
    }
}

/// A party's side of preprocessing.
pub enum DealerLink {
    /// P0: everything from its seed; no messages.
    P0 { prg: Prg, cols: std::collections::HashMap<u64, (usize, usize)> },
    /// P1: random parts from its seed, corrections over the link (`received`: payload bytes so far).
    P1 { prg: Prg, link: Box<dyn Channel>, cols: std::collections::HashMap<u64, (usize, usize)>, received: u64 },
    /// After the session: the link is closed.
    Closed,
}

/// One party's share of a triple or of truncation material.
pub struct Material {
    pub a: RingTensor,
    pub b: RingTensor,
    pub c: RingTensor,
}

impl DealerLink {
    pub fn new(id: usize, seed: Seed, link: Option<Box<dyn Channel>>) -> Self {
        let prg = Prg::new(seed, STREAM_PREPROCESSING);
        let cols = std::collections::HashMap::new();
        match (id, link) {
            (0, _) => DealerLink::P0 { prg, cols },
            (_, Some(link)) => DealerLink::P1 { prg, link, cols, received: 0 },
            (_, None) => panic!("P1 needs a link to the dealer"),
        }
    }

    /// Continue from a fresh seed (the dealer's [`Dealer::reseed`]), keeping the registered
    /// weight-mask shapes.
    pub fn reseed(&mut self, seed: Seed) -> Result<(), ChannelError> {
        match self {
            DealerLink::P0 { prg, .. } | DealerLink::P1 { prg, .. } => {
                *prg = Prg::new(seed, STREAM_PREPROCESSING);
                Ok(())
            }
            DealerLink::Closed => Err(ChannelError::Disconnected),
        }
    }

    /// Correction bytes received from the dealer so far (P1; 0 for P0, which receives nothing).
    pub fn received_bytes(&self) -> u64 {
        match self {
            DealerLink::P1 { received, .. } => *received,
            _ => 0,
        }
    }

    /// Fetch material for `req`: (a, b, c) for triples; (r, msb_w(r), (r mod 2^(w−1))>>f) for Trunc;
    /// (a, ∅, a∘a) for Square; (∅, B share, ∅) for WeightMask; (A, ∅, A·B) for MatMulFixed.
    pub fn fetch(&mut self, req: Request) -> Result<Material, ChannelError> {
        let empty = || RingTensor::zeros(&[0]);
        let (prg, link, cols) = match self {
            DealerLink::P0 { prg, cols } => (prg, None, cols),
            DealerLink::P1 { prg, link, cols, received } => (prg, Some((link, received)), cols),
            DealerLink::Closed => return Err(ChannelError::Disconnected),
        };
        let p0 = link.is_none();
        let corr = match link {
            Some((link, received)) => {
                link.send(req.encode())?;
                let want = req.correction_len(|id| cols.get(&id).map_or(0, |c| c.1));
                let msg = link.recv()?;
                *received += msg.len() as u64;
                Some(from_bytes(&msg, want)?)
            }
            None => None,
        };
        // Each arm draws exactly what `Dealer::correction` draws from this party's replica.
        Ok(match req {
            Request::Mul { n } => {
                let (a, b) = (prg.ring(&[n]), prg.ring(&[n]));
                let c = if p0 { prg.ring(&[n]) } else { RingTensor::new(&[n], corr.unwrap_or_default()) };
                // P0 draws a, b, c; P1 draws a, b and receives c.
                Material { a, b, c }
            }
            Request::MatMul { m, k, n } => {
                let (a, b) = (prg.ring(&[m, k]), prg.ring(&[k, n]));
                let c = if p0 { prg.ring(&[m, n]) } else { RingTensor::new(&[m, n], corr.unwrap_or_default()) };
                Material { a, b, c }
            }
            Request::Trunc { n, .. } => {
                let r = prg.ring(&[n]);
                if p0 {
                    Material { a: r, b: prg.ring(&[n]), c: prg.ring(&[n]) }
                } else {
                    let c = corr.unwrap_or_default();
                    Material { a: r, b: RingTensor::new(&[n], c[..n].to_vec()), c: RingTensor::new(&[n], c[n..].to_vec()) }
                }
            }
            Request::Square { n } => {
                let a = prg.ring(&[n]);
                let c = if p0 { prg.ring(&[n]) } else { RingTensor::new(&[n], corr.unwrap_or_default()) };
                Material { a, b: empty(), c }
            }
            Request::WeightMask { id, k, n } => {
                cols.insert(id, (k, n));
                Material { a: empty(), b: prg.ring(&[k, n]), c: empty() }
            }
            Request::MatMulFixed { id, m } => {
                let &(k, n) = cols.get(&id).ok_or_else(|| {
                    ChannelError::Malformed(format!("weight mask {id} was never registered"))
                })?;
                let a = prg.ring(&[m, k]);
                let c = if p0 { prg.ring(&[m, n]) } else { RingTensor::new(&[m, n], corr.unwrap_or_default()) };
                Material { a, b: empty(), c }
            }
            // (r arithmetic, r as XOR shares, ∅)
            Request::EdaBit { n } => {
                let r = prg.ring(&[n]);
                let rb = if p0 { prg.ring(&[n]) } else { RingTensor::new(&[n], corr.unwrap_or_default()) };
                Material { a: r, b: rb, c: empty() }
            }
            Request::AndTriple { n } => {
                let (a, b) = (prg.ring(&[n]), prg.ring(&[n]));
                let c = if p0 { prg.ring(&[n]) } else { RingTensor::new(&[n], corr.unwrap_or_default()) };
                Material { a, b, c }
            }
            // (t arithmetic, t as an XOR-shared bit, ∅)
            Request::DaBit { n } => {
                if p0 {
                    let ta = prg.ring(&[n]);
                    Material { a: ta, b: prg.ring(&[n]).map(|x| x & 1), c: empty() }
                } else {
                    let tb = prg.ring(&[n]).map(|x| x & 1);
                    Material { a: RingTensor::new(&[n], corr.unwrap_or_default()), b: tb, c: empty() }
                }
            }
            // ([t arithmetic ; a] (2n), t as an XOR-shared bit, a·t)
            Request::BitMul { n } => {
                if p0 {
                    let (ta, tb) = (prg.ring(&[n]), prg.ring(&[n]).map(|x| x & 1));
                    let (a, c) = (prg.ring(&[n]), prg.ring(&[n]));
                    let mut ta_a = ta.data;
                    ta_a.extend_from_slice(&a.data);
                    Material { a: RingTensor::new(&[2 * n], ta_a), b: tb, c }
                } else {
                    let (tb, a) = (prg.ring(&[n]).map(|x| x & 1), prg.ring(&[n]));
                    let corr = corr.unwrap_or_default();
                    let mut ta_a = corr[..n].to_vec();
                    ta_a.extend_from_slice(&a.data);
                    Material { a: RingTensor::new(&[2 * n], ta_a), b: tb, c: RingTensor::new(&[n], corr[n..].to_vec()) }
                }
            }
            Request::RowMul { rows, l } => {
                let (a, b) = (prg.ring(&[rows * l]), prg.ring(&[rows]));
                let c = if p0 { prg.ring(&[rows * l]) } else { RingTensor::new(&[rows * l], corr.unwrap_or_default()) };
                Material { a, b, c }
            }
            // (r arithmetic, r as XOR shares, packed monomials of ¬r [subsets·words], subset-major)
            Request::EdaMono { n } => {
                let r = prg.ring(&[n]);
                let k = EDA_MONOMIALS.len() * eda_mono_words(n);
                if p0 {
                    let rb = prg.ring(&[n]);
                    Material { a: r, b: rb, c: prg.ring(&[k]) }
                } else {
                    let corr = corr.unwrap_or_default();
                    let (rb, mono) = corr.split_at(n);
                    Material { a: r, b: RingTensor::new(&[n], rb.to_vec()), c: RingTensor::new(&[k], mono.to_vec()) }
                }
            }
            // (masks [AND4_VARS·n], ∅, mask products [terms·n]), variable- and term-major.
            Request::And4 { n } => {
                let a = prg.ring(&[AND4_VARS * n]);
                let k = and4_terms().len() * n;
                let c = if p0 { prg.ring(&[k]) } else { RingTensor::new(&[k], corr.unwrap_or_default()) };
                Material { a, b: empty(), c }
            }
            // ([t arithmetic (n·m) ; a (n)], t as XOR-shared bits, a·t), element-major.
            Request::InjectMany { n, m } => {
                if p0 {
                    let (ta, tb) = (prg.ring(&[n * m]), prg.ring(&[n * m]).map(|x| x & 1));
                    let (a, c) = (prg.ring(&[n]), prg.ring(&[n * m]));
                    let mut ta_a = ta.data;
                    ta_a.extend_from_slice(&a.data);
                    Material { a: RingTensor::new(&[n * m + n], ta_a), b: tb, c }
                } else {
                    let (tb, a) = (prg.ring(&[n * m]).map(|x| x & 1), prg.ring(&[n]));
                    let corr = corr.unwrap_or_default();
                    let mut ta_a = corr[..n * m].to_vec();
                    ta_a.extend_from_slice(&a.data);
                    Material { a: RingTensor::new(&[n * m + n], ta_a), b: tb, c: RingTensor::new(&[n * m], corr[n * m..].to_vec()) }
                }
            }
            // ([t arithmetic (n·pairs) ; a (n·k)], t as XOR-shared bits, per group [t_S ; t_S·a]).
            Request::Tournament { n, k } => {
                let (np, nts, ntsa) = tournament_sizes(k);
                let (ta, tb, a, c) = if p0 {
                    let (ta, tb) = (prg.ring(&[n * np]), prg.ring(&[n * np]).map(|x| x & 1));
                    let (a, c) = (prg.ring(&[n * k]), prg.ring(&[n * (nts + ntsa)]));
                    (ta.data, tb, a.data, c)
                } else {
                    let (tb, a) = (prg.ring(&[n * np]).map(|x| x & 1), prg.ring(&[n * k]));
                    let mut corr = corr.unwrap_or_default();
                    let c = corr.split_off(n * np);
                    (corr, tb, a.data, RingTensor::new(&[n * (nts + ntsa)], c))
                };
                let mut ta_a = ta;
                ta_a.extend_from_slice(&a);
                Material { a: RingTensor::new(&[n * (np + k)], ta_a), b: tb, c }
            }
            // (β, [rt·β ; msb·β], ∅)
            Request::TruncMul { n, .. } => {
                let b = prg.ring(&[n]);
                let c = if p0 { prg.ring(&[2 * n]) } else { RingTensor::new(&[2 * n], corr.unwrap_or_default()) };
                Material { a: b, b: c, c: empty() }
            }
            // (∅, B share, ∅)
            Request::VecMask { n, .. } => Material { a: empty(), b: prg.ring(&[n]), c: empty() },
            // (∅, ∅, [rt·B ; msb·B])
            Request::TruncMulVec { n, .. } => {
                let c = if p0 { prg.ring(&[2 * n]) } else { RingTensor::new(&[2 * n], corr.unwrap_or_default()) };
                Material { a: empty(), b: empty(), c }
            }
            // (∅, β [n/l], [rt·β ; msb·β])
            Request::TruncMulWide { n, l, .. } => {
                let b = prg.ring(&[n / l]);
                let c = if p0 { prg.ring(&[2 * n]) } else { RingTensor::new(&[2 * n], corr.unwrap_or_default()) };
                Material { a: empty(), b, c }
            }
            // ([rt·rt′ ; rt·msb′ ; msb·rt′ ; msb·msb′], ∅, ∅)
            Request::TruncPair { n, .. } => {
                let a = if p0 { prg.ring(&[4 * n]) } else { RingTensor::new(&[4 * n], corr.unwrap_or_default()) };
                Material { a, b: empty(), c: empty() }
            }
            // (β or ∅, [M(k) ; β·M(k)] or [M(k) ; rt_a·M(k) ; msb_a·M(k)], ∅), monomial-major.
            Request::TruncPow { n, k, with, .. } => {
                let a = if with.is_none() { prg.ring(&[n]) } else { empty() };
                let len = if with.is_none() { 4 } else { 6 } * k as usize * n;
                let b = if p0 { prg.ring(&[len]) } else { RingTensor::new(&[len], corr.unwrap_or_default()) };
                Material { a, b, c: empty() }
            }
            // (∅, the seed kᵢ as two words, ∅)
            Request::EmbedSeed => Material { a: empty(), b: prg.ring(&[2]), c: empty() },
            // (∅, ∅, Cᵢ [m,H]); the caller expands Aᵢ from its seed.
            Request::EmbedMask { id, m } => {
                let &(_, h) = cols.get(&id).ok_or_else(|| {
                    ChannelError::Malformed(format!("embedding mask {id} was never registered"))
                })?;
                let c = if p0 { prg.ring(&[m, h]) } else { RingTensor::new(&[m, h], corr.unwrap_or_default()) };
                Material { a: empty(), b: empty(), c }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tournament_requests_round_trip_and_bad_group_sizes_are_refused() {
        for k in 2..=TOURNAMENT_MAX_K {
            let r = Request::Tournament { n: 37, k };
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        for k in [0u64, 1, TOURNAMENT_MAX_K as u64 + 1, 64] {
            let msg = to_bytes(&[19, 5, k, 0]);
            let err = Request::decode(&msg).unwrap_err().to_string();
            assert!(err.contains("tournament groups of"), "{err}");
        }
    }

    #[test]
    fn truncation_power_requests_round_trip_and_bad_fields_are_refused() {
        for with in [None, Some(0), Some(RECENT_TRUNCS - 1)] {
            for (back, k) in [(0, 1), (RECENT_TRUNCS - 1, TRUNC_POW_MAX_K), (2, 3)] {
                let r = Request::TruncPow { n: 129, back, k, with };
                assert_eq!(Request::decode(&r.encode()).unwrap(), r);
            }
        }
        for (back_word, k, want) in [
            (RECENT_TRUNCS as u64, 2, "truncation power against"),
            ((RECENT_TRUNCS as u64 + 1) << 8, 2, "truncation power against"),
            (1 << 16, 2, "truncation power against"),
            (0, 0, "truncation power 0"),
            (0, TRUNC_POW_MAX_K as u64 + 1, "truncation power 5"),
        ] {
            let err = Request::decode(&to_bytes(&[20, 5, back_word, k])).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn eda_monomial_requests_round_trip_and_retired_tags_are_refused() {
        let r = Request::EdaMono { n: 1001 };
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        assert_eq!(r.correction_len(|_| 0), 1001 + 11 * 251);
        // 18 was LayerNorm's square-and-γ product (schedule ≤ 4).
        for tag in [18u64] {
            let err = Request::decode(&to_bytes(&[tag, 5, 5, 0])).unwrap_err().to_string();
            assert!(err.contains("unknown dealer request tag"), "{err}");
        }
    }

    #[test]
    fn broadcast_truncation_products_round_trip_and_bad_fields_are_refused() {
        for r in [
            Request::TruncPair { n: 96, back_a: 0, back_b: RECENT_TRUNCS - 1, l: 12 },
            Request::TruncMulWide { n: 96, back: 2, l: 8 },
            Request::TruncMulVec { n: 96, back: 1, id: 1 << 40 },
            Request::VecMask { id: 7, n: 32 },
        ] {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        for msg in [
            [16u64, 5, RECENT_TRUNCS as u64, 1],
            [16, 5, (RECENT_TRUNCS as u64) << 8, 1],
            [16, 5, 0, 0],
            [22, 5, RECENT_TRUNCS as u64, 1],
            [22, 5, 0, 0],
            [23, 5, RECENT_TRUNCS as u64, 3],
        ] {
            assert!(Request::decode(&to_bytes(&msg)).is_err(), "{msg:?} accepted");
        }
    }

    #[test]
    fn truncation_requests_carry_their_ring_width_and_bad_widths_are_refused() {
        for r in [Request::Trunc { n: 9, f: 16, width: 64 }, Request::Trunc { n: 9, f: 16, width: 45 }, Request::Trunc { n: 1, f: 1, width: 4 }] {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        for msg in [[2u64, 5, 16, 18], [2, 5, 16, 65], [2, 5, 0, 64], [2, 5, 16, 0]] {
            assert!(Request::decode(&to_bytes(&msg)).is_err(), "{msg:?} accepted");
        }
    }

    /// Bit m of a monomial field is the AND of bits 4m + o (o ∈ T) of the value; every subset of
    /// two or more offsets is listed once and indexed.
    #[test]
    fn eda_monomials_are_products_of_each_groups_bits() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let fields = eda_monomials(x);
            for (ti, &t) in EDA_MONOMIALS.iter().enumerate() {
                assert_eq!(EDA_MONOMIAL_INDEX[t as usize], Some(ti));
                let f = fields[ti];
                for m in 0..16 {
                    let want = (0..4).filter(|o| t >> o & 1 == 1).all(|o| x >> (4 * m + o) & 1 == 1);
                    assert_eq!(f >> m & 1 == 1, want, "value {x:#x}, subset {t:04b}, group {m}");
                }
                assert_eq!(f >> 16, 0);
            }
        }
        let listed = (0u8..16).filter(|t| t.count_ones() >= 2).count();
        assert_eq!(listed, EDA_MONOMIALS.len());
    }

    /// The monomials tᵏ is linear in, in the documented order, with msb² = msb folded.
    #[test]
    fn truncation_power_monomials_in_order() {
        let (rt, m) = (7u64, 1u64);
        assert_eq!(trunc_pow_monomials(rt, m, 3).collect::<Vec<_>>(), vec![7, 49, 343, 1, 7, 49]);
        assert_eq!(trunc_pow_monomials(rt, 0, 2).collect::<Vec<_>>(), vec![7, 49, 0, 0]);
    }

    /// Pairs are numbered in the (a, b) loop order the callers build their differences in, and
    /// each member's literals read exactly the k − 1 pairs that contain it, negated where it is
    /// the pair's second element.
    #[test]
    fn pair_numbering_and_literals_cover_each_member_once() {
        for k in 2..=TOURNAMENT_MAX_K {
            let mut next = 0;
            for a in 0..k {
                for b in a + 1..k {
                    assert_eq!(pair_index(k, a, b), next);
                    next += 1;
                }
            }
            assert_eq!(next, tournament_sizes(k).0);
            for i in 0..k {
                let mut seen: Vec<usize> = Vec::new();
                for q in 0..k - 1 {
                    let (p, neg) = tournament_literal(k, i, q);
                    let j = if q < i { q } else { q + 1 };
                    assert_eq!(p, pair_index(k, i.min(j), i.max(j)));
                    assert_eq!(neg, j < i);
                    seen.push(p);
                }
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), k - 1);
            }
            let multi = multi_subset_index(k);
            assert_eq!(multi.iter().filter(|&&m| m != usize::MAX).count() * k, tournament_sizes(k).1);
        }
    }
}
