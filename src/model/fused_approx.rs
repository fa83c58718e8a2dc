//! MPCFormer's Quad and 2Quad (spec §1.1) as single parallel CPU kernels with their own backward.
//!
//! Composed from candle ops, Quad costs 4 tensor ops forward and ~8 backward over the
//! [tokens, 4·hidden] FFN activation, and 2Quad 5 forward and ~10 backward over every layer's
//! [B, heads, L, L] scores, each a full pass that allocates; a student's training step spends
//! a visible share of its time there. Here:
//! - Quad: `y = 0.125x² + 0.25x + 0.5`, `dx = dy·(0.25x + 0.25)`;
//! - 2Quad over the key axis with the 0/1 key mask m: `q = (s + c)²·m`, `p = q / Σq`, and
//!   `ds = 2(s + c)·m·(dy − Σ dy·p) / Σq`.
//!
//! Both are checked against the composed forms (values and gradients) in the tests below.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fused::slice;

const CHUNK: usize = 1 << 13;

struct Quad;
struct QuadGrad;

impl CustomOp1 for Quad {
    fn name(&self) -> &'static str {
        "quad-par"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "quad")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = (0.125 * x + 0.25) * x + 0.5;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad_res.contiguous()?, &QuadGrad)?))
    }
}

impl CustomOp2 for QuadGrad {
    fn name(&self) -> &'static str {
        "quad-grad-par"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (slice(s1, l1, "quad grad")?, slice(s2, l2, "quad grad")?);
        if x.len() != dy.len() {
            candle_core::bail!("quad grad: {:?} vs {:?}", l1.dims(), l2.dims())
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)).for_each(|((o, x), dy)| {
            for ((o, &x), &g) in o.iter_mut().zip(x).zip(dy) {
                *o = g * (0.25 * x + 0.25);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Quad with gradient; candle's composed ops off the CPU/f32 path.
pub fn quad(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(Quad)
    } else {
        x.sqr()?.affine(0.125, 0.5)? + x.affine(0.25, 0.0)?
    }
}

/// Shape facts of a 2Quad call: scores [B, …, Lk] (rows of Lk), mask [B, 1, 1, Lk].
fn geometry(scores: &Layout, mask: &Layout) -> Result<(usize, usize)> {
    let lk = *scores.dims().last().unwrap_or(&1);
    let b = *scores.dims().first().unwrap_or(&1);
    if mask.shape().elem_count() != b * lk || *mask.dims().last().unwrap_or(&0) != lk {
        candle_core::bail!("2quad: scores {:?} with key mask {:?} (want [B, 1, 1, Lk])", scores.dims(), mask.dims())
    }
    let rows_per_batch = scores.shape().elem_count() / (b * lk).max(1);
    Ok((lk, rows_per_batch))
}

struct TwoQuad {
    c: f32,
}
struct TwoQuadGrad {
    c: f32,
}

impl CustomOp2 for TwoQuad {
    fn name(&self) -> &'static str {
        "2quad-par"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (s, m) = (slice(s1, l1, "2quad")?, slice(s2, l2, "2quad")?);
        let (lk, per_batch) = geometry(l1, l2)?;
        let c = self.c;
        let mut out = vec![0f32; s.len()];
        out.par_chunks_mut(lk).zip(s.par_chunks(lk)).enumerate().for_each(|(r, (o, s))| {
            let m = &m[(r / per_batch) * lk..][..lk];
            let mut den = 0f32;
            for k in 0..lk {
                let q = (s[k] + c) * (s[k] + c) * m[k];
                o[k] = q;
                den += q;
            }
            let inv = 1.0 / den;
            o.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(&self, s: &Tensor, m: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let ds = s.apply_op3_no_bwd(m, &dy.contiguous()?, &TwoQuadGrad { c: self.c })?;
        Ok((Some(ds), None))
    }
}

impl CustomOp3 for TwoQuadGrad {
    fn name(&self) -> &'static str {
        "2quad-grad-par"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (s, m, dy) = (slice(s1, l1, "2quad grad")?, slice(s2, l2, "2quad grad")?, slice(s3, l3, "2quad grad")?);
        let (lk, per_batch) = geometry(l1, l2)?;
        if dy.len() != s.len() {
            candle_core::bail!("2quad grad: scores {:?} vs gradient {:?}", l1.dims(), l3.dims())
        }
        let c = self.c;
        let mut out = vec![0f32; s.len()];
        out.par_chunks_mut(lk).zip(s.par_chunks(lk)).zip(dy.par_chunks(lk)).enumerate().for_each(|(r, ((o, s), dy))| {
            let m = &m[(r / per_batch) * lk..][..lk];
            let mut den = 0f32;
            let mut dot = 0f32;
            for k in 0..lk {
                let q = (s[k] + c) * (s[k] + c) * m[k];
                den += q;
                dot += dy[k] * q;
            }
            let inv = 1.0 / den;
            let t = dot * inv; // Σ dy·p
            for k in 0..lk {
                o[k] = 2.0 * (s[k] + c) * m[k] * (dy[k] - t) * inv;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// 2Quad normalisation of `scores` [B, …, Lk] with the 0/1 key mask [B, 1, 1, Lk] and shift `c`,
/// differentiable in `scores`; candle's composed ops off the CPU/f32 path.
pub fn two_quad(scores: &Tensor, mask01: &Tensor, c: f64) -> Result<Tensor> {
    let cpu_f32 = scores.device().is_cpu() && scores.dtype() == candle_core::DType::F32;
    if cpu_f32 && mask01.dims().len() == 4 && mask01.dim(0)? == scores.dim(0)? {
        scores.contiguous()?.apply_op2(&mask01.contiguous()?, TwoQuad { c: c as f32 })
    } else {
        let q = (scores + c)?.sqr()?.broadcast_mul(mask01)?;
        let den = q.sum_keepdim(candle_core::D::Minus1)?;
        q.broadcast_div(&den)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    #[test]
    fn quad_matches_composed_in_value_and_gradient() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 3.0, (7, 300), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (7, 300), &dev).unwrap();
        let a = quad(x.as_tensor()).unwrap();
        let b = (x.as_tensor().sqr().unwrap().affine(0.125, 0.5).unwrap() + x.as_tensor().affine(0.25, 0.0).unwrap()).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
        let ga = (a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(ga.get(x.as_tensor()).unwrap(), gb.get(x.as_tensor()).unwrap()) < 1e-5);
    }

    #[test]
    fn two_quad_matches_composed_in_value_and_gradient() {
        let dev = Device::Cpu;
        let (b, h, lq, lk) = (3, 2, 5, 7);
        let s = Var::randn(0f32, 3.0, (b, h, lq, lk), &dev).unwrap();
        // Different padding per batch row.
        let mut m = vec![1f32; b * lk];
        m[lk - 1] = 0.0;
        m[lk - 2] = 0.0;
        m[2 * lk - 1] = 0.0;
        let m = Tensor::from_vec(m, (b, 1, 1, lk), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (b, h, lq, lk), &dev).unwrap();
        for c in [5.0, 0.5] {
            let fused = two_quad(s.as_tensor(), &m, c).unwrap();
            let q = (s.as_tensor() + c).unwrap().sqr().unwrap().broadcast_mul(&m).unwrap();
            let composed = q.broadcast_div(&q.sum_keepdim(D::Minus1).unwrap()).unwrap();
            assert!(max_diff(&fused, &composed) < 1e-6, "c={c}");
            let ga = (fused * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (composed * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let (ga, gb) = (ga.get(s.as_tensor()).unwrap(), gb.get(s.as_tensor()).unwrap());
            let scale: f32 = gb.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(max_diff(ga, gb) < 1e-5 * scale.max(1.0), "c={c}: {}", max_diff(ga, gb));
        }
        // A mask of the wrong shape is an error, not a silent broadcast.
        let bad = Tensor::ones((b, 1, 1, lk - 1), candle_core::DType::F32, &dev).unwrap();
        assert!(s.as_tensor().apply_op2(&bad, TwoQuad { c: 5.0 }).is_err());
    }
}
