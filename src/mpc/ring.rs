//! Tensors over the ring Z_2^64: wrapping `u64` arithmetic, row-major, concrete (no generics).
//!
//! The matrix product is the compute floor of private inference (a handful of these per linear
//! layer), so it is register-blocked (8×16 accumulators over the whole k) and parallel over row
//! blocks; wrapping arithmetic makes it exact for any k.

use rayon::prelude::*;

/// A dense tensor of ring elements.
#[derive(Clone, PartialEq, Eq)]
pub struct RingTensor {
    pub shape: Vec<usize>,
    pub data: Vec<u64>,
}

impl std::fmt::Debug for RingTensor {
    // Ring tensors hold shares as often as public values: never print contents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingTensor{{shape: {:?}, ..}}", self.shape)
    }
}

impl RingTensor {
    pub fn new(shape: &[usize], data: Vec<u64>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "ring tensor: shape {shape:?} vs {} values", data.len());
        Self { shape: shape.to_vec(), data }
    }
    pub fn zeros(shape: &[usize]) -> Self {
        Self::new(shape, vec![0; shape.iter().product()])
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn zip(&self, o: &Self, f: impl Fn(u64, u64) -> u64 + Sync) -> Self {
        assert_eq!(self.shape, o.shape, "ring op: shape mismatch");
        let data = self.data.par_iter().zip(&o.data).map(|(&a, &b)| f(a, b)).collect();
        Self { shape: self.shape.clone(), data }
    }
    pub fn add(&self, o: &Self) -> Self {
        self.zip(o, u64::wrapping_add)
    }
    pub fn sub(&self, o: &Self) -> Self {
        self.zip(o, u64::wrapping_sub)
    }
    pub fn mul(&self, o: &Self) -> Self {
        self.zip(o, u64::wrapping_mul)
    }
    /// Combine two equally shaped tensors word by word.
    pub fn zip_words(&self, o: &Self, f: impl Fn(u64, u64) -> u64 + Sync) -> Self {
        self.zip(o, f)
    }
    pub fn map(&self, f: impl Fn(u64) -> u64 + Sync) -> Self {
        Self { shape: self.shape.clone(), data: self.data.par_iter().map(|&a| f(a)).collect() }
    }
    pub fn neg(&self) -> Self {
        self.map(u64::wrapping_neg)
    }
    pub fn scale(&self, c: u64) -> Self {
        self.map(|a| a.wrapping_mul(c))
    }
    pub fn add_scalar(&self, c: u64) -> Self {
        self.map(|a| a.wrapping_add(c))
    }

    /// [m, k] · [k, n] → [m, n] over Z_2^64.
    /// [m, k] · packed [k, n] → [m, n].
    pub fn matmul_packed(&self, o: &PackedB) -> Self {
        assert!(self.shape.len() == 2 && self.shape[1] == o.k, "matmul: {:?} × [{}, {}]", self.shape, o.k, o.n);
        Self::new(&[self.shape[0], o.n], matmul_packed(&self.data, self.shape[0], o))
    }

    pub fn matmul(&self, o: &Self) -> Self {
        let (m, k) = (self.shape[0], self.shape[1]);
        let (k2, n) = (o.shape[0], o.shape[1]);
        assert!(self.shape.len() == 2 && o.shape.len() == 2 && k == k2, "matmul: {:?} × {:?}", self.shape, o.shape);
        Self::new(&[m, n], matmul_u64(&self.data, &o.data, m, k, n))
    }

    pub fn transpose(&self) -> Self {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0u64; r * c];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = self.data[i * c + j];
            }
        }
        Self::new(&[c, r], out)
    }
}

const MR: usize = 8;
const NR: usize = 16;

/// Wrapping u64 GEMM: C[m×n] = A[m×k]·B[k×n], row-major. B is repacked into NR-wide column
/// panels and A into MR-row blocks stored k-major, so the inner loop streams both contiguously;
/// each rayon task owns MR rows of C and keeps an MR×NR block of accumulators in registers for
/// the whole k. With AVX-512 (F + DQ, detected at run time) the block is 16 zmm registers
/// updated by `vpmullq`/`vpaddq`; otherwise a portable loop.
///
/// Why 8 rows: every task streams all of B (k·n words, megabytes for BERT-base weights, so from
/// L3), and B traffic per multiply-add is 8/MR bytes. At MR = 4 the 3072-wide FFN products ran
/// at ~30–40 G ops/s; at MR = 8 they run at 55–70, like the square ones (`kd bench gemm`).
pub fn matmul_u64(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    assert!(a.len() == m * k && b.len() == k * n, "matmul_u64: buffer sizes");
    matmul_packed(a, m, &PackedB::new(b, k, n))
}

/// A right-hand matrix [k, n] repacked into NR-wide column panels. Weights are packed once
/// per model and reused by every product.
#[derive(Clone)]
pub struct PackedB {
    panels: Vec<u64>,
    k: usize,
    n: usize,
}

impl PackedB {
    pub fn new(b: &[u64], k: usize, n: usize) -> Self {
        assert_eq!(b.len(), k * n, "PackedB: buffer size");
        let count = n.div_ceil(NR);
        let mut panels = vec![0u64; count * k * NR];
        panels.par_chunks_mut((k * NR).max(1)).enumerate().for_each(|(p, panel)| {
            for kk in 0..k {
                for j in 0..NR {
                    let col = p * NR + j;
                    if col < n {
                        panel[kk * NR + j] = b[kk * n + col];
                    }
                }
            }
        });
        Self { panels, k, n }
    }

    /// [k, n] of the packed matrix.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// A's rows in MR-row blocks, k-major inside a block (`block[kk·MR + r]`); rows past m are 0.
fn pack_a(a: &[u64], m: usize, k: usize) -> Vec<u64> {
    let mut out = vec![0u64; m.div_ceil(MR) * MR * k];
    out.par_chunks_mut((MR * k).max(1)).enumerate().for_each(|(blk, block)| {
        for r in 0..MR.min(m - blk * MR) {
            let row = &a[(blk * MR + r) * k..(blk * MR + r + 1) * k];
            for (kk, &v) in row.iter().enumerate() {
                block[kk * MR + r] = v;
            }
        }
    });
    out
}

/// C[m×n] = A[m×k]·B for a packed B.
pub fn matmul_packed(a: &[u64], m: usize, b: &PackedB) -> Vec<u64> {
    let (k, n) = (b.k, b.n);
    assert_eq!(a.len(), m * k, "matmul_packed: A is not m×k");
    let mut c = vec![0u64; m * n];
    if n == 0 || m == 0 {
        return c;
    }
    let panels = n.div_ceil(NR);
    let packed = &b.panels;
    let pa = pack_a(a, m, k);
    let simd = avx512_available();
    c.par_chunks_mut(MR * n).enumerate().for_each(|(blk, cblk)| {
        let rows = cblk.len() / n;
        let ablock = &pa[blk * MR * k..(blk + 1) * MR * k];
        for p in 0..panels {
            let panel = &packed[p * k * NR..(p + 1) * k * NR];
            let acc = if simd { block_avx512(ablock, panel, k) } else { block_portable(ablock, panel, k) };
            for (r, accr) in acc.iter().enumerate().take(rows) {
                let width = NR.min(n - p * NR);
                cblk[r * n + p * NR..r * n + p * NR + width].copy_from_slice(&accr[..width]);
            }
        }
    });
    c
}

fn block_portable(ablock: &[u64], panel: &[u64], k: usize) -> [[u64; NR]; MR] {
    let mut acc = [[0u64; NR]; MR];
    for kk in 0..k {
        let bv = &panel[kk * NR..kk * NR + NR];
        for (r, accr) in acc.iter_mut().enumerate() {
            let av = ablock[kk * MR + r];
            for (x, &bj) in accr.iter_mut().zip(bv) {
                *x = x.wrapping_add(av.wrapping_mul(bj));
            }
        }
    }
    acc
}

fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn block_avx512(ablock: &[u64], panel: &[u64], k: usize) -> [[u64; NR]; MR] {
    assert!(panel.len() >= k * NR && ablock.len() >= k * MR, "block_avx512: short operands");
    // SAFETY: only called when avx512f and avx512dq were detected at run time; all loads are
    // within `panel` (k·NR values) and `ablock` (k·MR values), checked above.
    unsafe { block_avx512_impl(ablock, panel, k) }
}

#[cfg(not(target_arch = "x86_64"))]
fn block_avx512(ablock: &[u64], panel: &[u64], k: usize) -> [[u64; NR]; MR] {
    block_portable(ablock, panel, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn block_avx512_impl(ablock: &[u64], panel: &[u64], k: usize) -> [[u64; NR]; MR] {
    use std::arch::x86_64::*;
    let mut c = [[_mm512_setzero_si512(); 2]; MR];
    let (pa, pb) = (ablock.as_ptr(), panel.as_ptr());
    for kk in 0..k {
        let b0 = _mm512_loadu_si512(pb.add(kk * NR) as *const _);
        let b1 = _mm512_loadu_si512(pb.add(kk * NR + 8) as *const _);
        for (r, cr) in c.iter_mut().enumerate() {
            let av = _mm512_set1_epi64(*pa.add(kk * MR + r) as i64);
            cr[0] = _mm512_add_epi64(cr[0], _mm512_mullo_epi64(av, b0));
            cr[1] = _mm512_add_epi64(cr[1], _mm512_mullo_epi64(av, b1));
        }
    }
    let mut out = [[0u64; NR]; MR];
    for (o, cr) in out.iter_mut().zip(&c) {
        _mm512_storeu_si512(o.as_mut_ptr() as *mut _, cr[0]);
        _mm512_storeu_si512(o.as_mut_ptr().add(8) as *mut _, cr[1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
        let mut c = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0u64;
                for kk in 0..k {
                    s = s.wrapping_add(a[i * k + kk].wrapping_mul(b[kk * n + j]));
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn portable_and_simd_blocks_agree() {
        let ablock: Vec<u64> = (0..37 * MR).map(|i| (i as u64 * 31 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let panel: Vec<u64> = (0..37 * NR).map(|i| (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).collect();
        assert_eq!(block_portable(&ablock, &panel, 37), block_avx512(&ablock, &panel, 37));
    }

    proptest! {
        #[test]
        fn matmul_equals_naive(m in 1usize..20, k in 1usize..13, n in 1usize..35, seed in any::<u64>()) {
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); s };
            let a: Vec<u64> = (0..m * k).map(|_| next()).collect();
            let b: Vec<u64> = (0..k * n).map(|_| next()).collect();
            prop_assert_eq!(matmul_u64(&a, &b, m, k, n), naive(&a, &b, m, k, n));
            let packed = PackedB::new(&b, k, n);
            prop_assert_eq!(matmul_packed(&a, m, &packed), naive(&a, &b, m, k, n));
        }

        #[test]
        fn ring_laws(x in prop::collection::vec(any::<u64>(), 6), y in prop::collection::vec(any::<u64>(), 6), z in prop::collection::vec(any::<u64>(), 6)) {
            let (x, y, z) = (RingTensor::new(&[2, 3], x), RingTensor::new(&[2, 3], y), RingTensor::new(&[2, 3], z));
            prop_assert_eq!(x.add(&y), y.add(&x));
            prop_assert_eq!(x.add(&y).add(&z), x.add(&y.add(&z)));
            prop_assert_eq!(x.sub(&x), RingTensor::zeros(&[2, 3]));
            prop_assert_eq!(x.mul(&y.add(&z)), x.mul(&y).add(&x.mul(&z)));
            prop_assert_eq!(x.add(&x.neg()), RingTensor::zeros(&[2, 3]));
        }
    }

    #[test]
    fn debug_hides_values() {
        let t = RingTensor::new(&[1, 2], vec![12345, 67890]);
        let s = format!("{t:?}");
        assert!(!s.contains("12345") && s.contains("[1, 2]"));
    }
}
