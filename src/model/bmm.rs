//! Batched matrix product for attention, parallel over the batch.
//!
//! candle's CPU matmul runs the B·heads small products of attention one after another, each a
//! GEMM split across all threads: thousands of tiny parallel regions per training step, each
//! ending in a barrier. Here each product runs single-threaded and the batch is spread over
//! rayon, which keeps both cores busy with no per-product synchronisation. Strided views
//! (e.g. `k.t()`) are read in place; the backward pass is two more batched products.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// A rank-≥3 operand seen as `batch` matrices of `rows × cols` with the given strides.
struct View {
    batch: usize,
    rows: usize,
    cols: usize,
    bs: usize,
    rs: usize,
    cs: usize,
    offset: usize,
}

fn view(l: &Layout) -> Result<View> {
    let d = l.dims();
    let s = l.stride();
    let r = d.len();
    if r < 3 {
        candle_core::bail!("bmm: expected rank ≥ 3, got {d:?}")
    }
    // Leading dims must collapse into one batch axis.
    for i in 0..r - 3 {
        if s[i] != s[i + 1] * d[i + 1] {
            candle_core::bail!("bmm: batch dims of {d:?} with strides {s:?} do not collapse")
        }
    }
    Ok(View {
        batch: d[..r - 2].iter().product(),
        rows: d[r - 2],
        cols: d[r - 1],
        bs: s[r - 3],
        rs: s[r - 2],
        cs: s[r - 1],
        offset: l.start_offset(),
    })
}

struct Bmm;

struct SendPtr(*const f32);
// SAFETY: the pointers are only read, into buffers that outlive the parallel loop.
unsafe impl Sync for SendPtr {}

impl CustomOp2 for Bmm {
    fn name(&self) -> &'static str {
        "bmm-batch-parallel"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(a), CpuStorage::F32(b)) = (s1, s2) else {
            candle_core::bail!("bmm: only f32 is supported")
        };
        let (va, vb) = (view(l1)?, view(l2)?);
        if va.batch != vb.batch || va.cols != vb.rows || l1.dims()[..l1.dims().len() - 2] != l2.dims()[..l2.dims().len() - 2] {
            candle_core::bail!("bmm: shape mismatch {:?} × {:?}", l1.dims(), l2.dims())
        }
        let (m, k, n) = (va.rows, va.cols, vb.cols);
        // Bounds: the furthest element each view touches must be inside its buffer.
        let last = |v: &View| v.offset + (v.batch - 1) * v.bs + (v.rows - 1) * v.rs + (v.cols - 1) * v.cs;
        if m * n * k > 0 && (last(&va) >= a.len() || last(&vb) >= b.len()) {
            candle_core::bail!("bmm: layout exceeds storage")
        }
        let mut out = vec![0f32; va.batch * m * n];
        let (pa, pb) = (SendPtr(a.as_ptr()), SendPtr(b.as_ptr()));
        if m * n > 0 {
            out.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| {
                let (pa, pb) = (&pa, &pb);
                // SAFETY: offsets stay within the buffers (checked above); `c` is exclusive.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        pa.0.add(va.offset + i * va.bs),
                        va.cs as isize,
                        va.rs as isize,
                        pb.0.add(vb.offset + i * vb.bs),
                        vb.cs as isize,
                        vb.rs as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            });
        }
        let mut dims = l1.dims().to_vec();
        let r = dims.len();
        dims[r - 1] = n;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let r = a.rank();
        let ga = bmm(g, &b.transpose(r - 2, r - 1)?)?;
        let gb = bmm(&a.transpose(r - 2, r - 1)?, g)?;
        Ok((Some(ga), Some(gb)))
    }
}

/// `a · b` over the last two axes, batched over the leading ones (which must match).
pub fn bmm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !(a.device().is_cpu() && a.dtype() == candle_core::DType::F32 && b.dtype() == candle_core::DType::F32) {
        return a.matmul(b);
    }
    let a = if view(a.layout()).is_ok() { a.clone() } else { a.contiguous()? };
    let b = if view(b.layout()).is_ok() { b.clone() } else { b.contiguous()? };
    a.apply_op2(&b, Bmm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn maxdiff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    #[test]
    fn matches_candle_matmul_including_strided_views() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (3, 4, 7, 5), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (3, 4, 9, 5), &dev).unwrap();
        let kt = k.t().unwrap(); // strided view
        assert!(maxdiff(&bmm(&q, &kt).unwrap(), &q.matmul(&kt).unwrap()) < 1e-5);
        // A narrowed (offset) operand.
        let q2 = q.narrow(0, 1, 2).unwrap();
        let kt2 = kt.narrow(0, 1, 2).unwrap();
        assert!(maxdiff(&bmm(&q2, &kt2).unwrap(), &q2.matmul(&kt2).unwrap()) < 1e-5);
        // Transposed heads/sequence (non-collapsible batch dims) fall back to a copy.
        let qt = q.transpose(1, 2).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 7, 5, 2), &dev).unwrap();
        assert!(maxdiff(&bmm(&qt, &w).unwrap(), &qt.contiguous().unwrap().matmul(&w).unwrap()) < 1e-5);
    }

    #[test]
    fn gradients_match_candle_matmul() {
        let dev = Device::Cpu;
        let a = Var::randn(0f32, 1.0, (2, 3, 4, 6), &dev).unwrap();
        let b = Var::randn(0f32, 1.0, (2, 3, 5, 6), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &dev).unwrap();
        let bt = b.as_tensor().t().unwrap();
        let l1 = (bmm(a.as_tensor(), &bt).unwrap() * &w).unwrap().sum_all().unwrap();
        let l2 = (a.as_tensor().matmul(&bt).unwrap() * &w).unwrap().sum_all().unwrap();
        let (g1, g2) = (l1.backward().unwrap(), l2.backward().unwrap());
        for v in [&a, &b] {
            assert!(maxdiff(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap()) < 1e-4);
        }
    }
}
