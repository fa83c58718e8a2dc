//! Tensors over the ring Z_2^64: wrapping `u64` arithmetic, row-major, concrete (no generics).
//!
//! The matrix product is the compute floor of private inference (a handful of these per linear
//! layer), so it is register-blocked (4×8 accumulators, unrolled over k) and parallel over row
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

const MR: usize = 4;
const NR: usize = 8;

/// Wrapping u64 GEMM: C[m×n] = A[m×k]·B[k×n], row-major. B is repacked into NR-wide column
/// panels so the inner loop streams contiguous memory; each task owns MR rows of C.
pub fn matmul_u64(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    let panels = n.div_ceil(NR);
    let mut packed = vec![0u64; panels * k * NR];
    packed.par_chunks_mut(k * NR).enumerate().for_each(|(p, panel)| {
        for kk in 0..k {
            for j in 0..NR {
                let col = p * NR + j;
                if col < n {
                    panel[kk * NR + j] = b[kk * n + col];
                }
            }
        }
    });
    let mut c = vec![0u64; m * n];
    c.par_chunks_mut(MR * n).enumerate().for_each(|(blk, cblk)| {
        let i0 = blk * MR;
        let rows = cblk.len() / n.max(1);
        for p in 0..panels {
            let panel = &packed[p * k * NR..(p + 1) * k * NR];
            let mut acc = [[0u64; NR]; MR];
            for kk in 0..k {
                let bv = &panel[kk * NR..kk * NR + NR];
                for (r, accr) in acc.iter_mut().enumerate().take(rows) {
                    let av = a[(i0 + r) * k + kk];
                    for j in 0..NR {
                        accr[j] = accr[j].wrapping_add(av.wrapping_mul(bv[j]));
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate().take(rows) {
                for j in 0..NR {
                    let col = p * NR + j;
                    if col < n {
                        cblk[r * n + col] = accr[j];
                    }
                }
            }
        }
    });
    c
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

    proptest! {
        #[test]
        fn matmul_equals_naive(m in 1usize..11, k in 1usize..13, n in 1usize..19, seed in any::<u64>()) {
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); s };
            let a: Vec<u64> = (0..m * k).map(|_| next()).collect();
            let b: Vec<u64> = (0..k * n).map(|_| next()).collect();
            prop_assert_eq!(matmul_u64(&a, &b, m, k, n), naive(&a, &b, m, k, n));
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
