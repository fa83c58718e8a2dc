//! Fused LayerNorm and softmax for training: one parallel pass forward, one backward.
//!
//! The composed forms (which candle can differentiate) cost ~11 tensor ops forward and ~20
//! backward per use, each allocating a fresh tensor; with 13 LayerNorms and 6 softmaxes per
//! MiniLM step that dominated the backward pass. These ops compute the same functions with
//! hand-written gradients (checked against the composed forms in the tests below):
//! - LayerNorm: `y = x̂·w + b`, `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)` (biased σ²), and
//!   `dx = r·(g − mean(g) − x̂·mean(g·x̂))` with `g = dy·w`; `dw = Σ dy·x̂`, `db = Σ dy`;
//! - softmax over the last axis: `dx = y·(dy − Σ dy·y)`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: expected a contiguous f32 tensor"),
    }
}

/// Rows of `h` values processed together per rayon task.
fn rows_per_task(h: usize) -> usize {
    (8192 / h.max(1)).max(1)
}

/// out[row] = f(x[row], out[row]) over rows of width `h`, in parallel.
fn rows1(x: &[f32], h: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let k = rows_per_task(h) * h;
    out.par_chunks_mut(k).zip(x.par_chunks(k)).for_each(|(o, x)| {
        for (o, x) in o.chunks_mut(h).zip(x.chunks(h)) {
            f(x, o);
        }
    });
    out
}

/// out[row] = f(x[row], y[row], out[row]) over rows of width `h`, in parallel.
fn rows2(x: &[f32], y: &[f32], h: usize, f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let k = rows_per_task(h) * h;
    out.par_chunks_mut(k).zip(x.par_chunks(k)).zip(y.par_chunks(k)).for_each(|((o, x), y)| {
        for ((o, x), y) in o.chunks_mut(h).zip(x.chunks(h)).zip(y.chunks(h)) {
            f(x, y, o);
        }
    });
    out
}

#[inline]
fn stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

struct Ln {
    eps: f32,
}
struct LnNormalize {
    eps: f32,
}
struct LnDx {
    eps: f32,
}

impl CustomOp3 for Ln {
    fn name(&self) -> &'static str {
        "layer-norm-train"
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
        let (x, w, b) = (slice(s1, l1, "layer norm")?, slice(s2, l2, "layer norm")?, slice(s3, l3, "layer norm")?);
        let h = w.len();
        if b.len() != h || x.len() % h != 0 {
            candle_core::bail!("layer norm: input {:?} vs weight {h}", l1.dims())
        }
        let out = rows1(x, h, |x, o| {
            let (m, r) = stats(x, self.eps);
            for i in 0..h {
                o[i] = (x[i] - m) * r * w[i] + b[i];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let h = w.dim(0)?;
        let rows = x.elem_count() / h;
        let dx = x.apply_op3_no_bwd(w, &dy, &LnDx { eps: self.eps })?;
        let xhat = x.apply_op1_no_bwd(&LnNormalize { eps: self.eps })?;
        let dy2 = dy.reshape((rows, h))?;
        let dw = sum_to_last(&(&dy2 * xhat.reshape((rows, h))?)?)?;
        let db = sum_to_last(&dy2)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp1 for LnNormalize {
    fn name(&self) -> &'static str {
        "layer-norm-normalize"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "layer norm")?;
        let h = *l.dims().last().unwrap_or(&1);
        let out = rows1(x, h, |x, o| {
            let (m, r) = stats(x, self.eps);
            for i in 0..h {
                o[i] = (x[i] - m) * r;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

impl CustomOp3 for LnDx {
    fn name(&self) -> &'static str {
        "layer-norm-dx"
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
        let (x, w, dy) = (slice(s1, l1, "layer norm")?, slice(s2, l2, "layer norm")?, slice(s3, l3, "layer norm")?);
        let h = w.len();
        let out = rows2(x, dy, h, |x, dy, o| {
            let (m, r) = stats(x, self.eps);
            let (mut sg, mut sgx) = (0f32, 0f32);
            for i in 0..h {
                let g = dy[i] * w[i];
                sg += g;
                sgx += g * (x[i] - m) * r;
            }
            let (mg, mgx) = (sg / h as f32, sgx / h as f32);
            for i in 0..h {
                let xh = (x[i] - m) * r;
                o[i] = r * (dy[i] * w[i] - mg - xh * mgx);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Differentiable LayerNorm over the last axis (CPU f32; callers fall back otherwise).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Ln { eps: eps as f32 })
}

struct Softmax;
struct SoftmaxGrad;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim-train"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "softmax")?;
        let h = *l.dims().last().unwrap_or(&1);
        let out = rows1(x, h, |x, o| {
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0f32;
            for i in 0..h {
                o[i] = (x[i] - m).exp();
                s += o[i];
            }
            let inv = 1.0 / s;
            o.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxGrad)?))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-last-dim-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, dy) = (slice(s1, l1, "softmax")?, slice(s2, l2, "softmax")?);
        let h = *l1.dims().last().unwrap_or(&1);
        let out = rows2(y, dy, h, |y, dy, o| {
            let dot: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
            for i in 0..h {
                o[i] = y[i] * (dy[i] - dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Differentiable softmax over the last axis.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

/// Whether the fused CPU kernels apply to `x`.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn maxdiff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    fn composed_ln(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let n = x.dim(D::Minus1).unwrap() as f64;
        let mean = (x.sum_keepdim(D::Minus1).unwrap() / n).unwrap();
        let xc = x.broadcast_sub(&mean).unwrap();
        let var = (xc.sqr().unwrap().sum_keepdim(D::Minus1).unwrap() / n).unwrap();
        let xn = xc.broadcast_div(&(var + eps).unwrap().sqrt().unwrap()).unwrap();
        xn.broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
    }

    #[test]
    fn layer_norm_value_and_gradients_match_composed_form() {
        let dev = Device::Cpu;
        let x = Var::randn(0.5f32, 2.0, (3, 5, 24), &dev).unwrap();
        let w = Var::randn(1f32, 0.3, 24, &dev).unwrap();
        let b = Var::randn(0f32, 0.3, 24, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (3, 5, 24), &dev).unwrap();
        let a = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let c = composed_ln(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5);
        assert!(maxdiff(&a, &c) < 1e-5);
        let ga = (a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (c * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            let d = maxdiff(ga.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).unwrap());
            assert!(d < 1e-4, "{d}");
        }
    }

    #[test]
    fn softmax_value_and_gradient_match_composed_form() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 3.0, (2, 3, 7, 9), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (2, 3, 7, 9), &dev).unwrap();
        // A transposed (non-contiguous) input too.
        let xt = x.as_tensor().transpose(2, 3).unwrap();
        for input in [x.as_tensor().clone(), xt] {
            let p = if input.is_contiguous() { probe.clone() } else { probe.transpose(2, 3).unwrap() };
            let a = softmax_last_dim(&input).unwrap();
            let c = candle_nn::ops::softmax(&input, D::Minus1).unwrap();
            assert!(maxdiff(&a, &c) < 1e-6);
            let ga = (a * &p).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (c * &p).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(maxdiff(ga.get(x.as_tensor()).unwrap(), gc.get(x.as_tensor()).unwrap()) < 1e-5);
        }
    }

    #[test]
    fn softmax_handles_masked_rows() {
        let x = Tensor::new(&[[1f32, -10000.0, 2.0], [-10000.0, -10000.0, -10000.0]], &Device::Cpu).unwrap();
        let y: Vec<Vec<f32>> = softmax_last_dim(&x).unwrap().to_vec2().unwrap();
        assert!(y[0][1] == 0.0 && (y[0][0] + y[0][2] - 1.0).abs() < 1e-6);
        assert!(y[1].iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6));
    }
}

/// Column sums of a row-major [rows, cols] matrix, in parallel over row blocks.
fn col_sums(x: &[f32], cols: usize) -> Vec<f32> {
    let block = rows_per_task(cols).max(16) * cols;
    x.par_chunks(block)
        .map(|c| {
            let mut s = vec![0f32; cols];
            for row in c.chunks(cols) {
                for (a, &v) in s.iter_mut().zip(row) {
                    *a += v;
                }
            }
            s
        })
        .reduce(
            || vec![0f32; cols],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

struct ColSum;

impl CustomOp1 for ColSum {
    fn name(&self) -> &'static str {
        "column-sums"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "column sums")?;
        let cols = *l.dims().last().unwrap_or(&1);
        Ok((CpuStorage::F32(col_sums(x, cols)), Shape::from(cols)))
    }
}

/// Sum over every axis but the last (a bias or LayerNorm-parameter gradient).
pub fn sum_to_last(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&ColSum)
}

/// `y = x·Wᵀ + b` for x [rows, in], W [out, in]: one GEMM forward, two GEMMs and a parallel
/// column sum backward (candle's bias gradient is a strided single-threaded reduction).
struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear-train"
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
        let (x, w, b) = (slice(s1, l1, "linear")?, slice(s2, l2, "linear")?, slice(s3, l3, "linear")?);
        let (rows, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 || b.len() != n {
            candle_core::bail!("linear: x {:?}, weight {:?}, bias {}", l1.dims(), l2.dims(), b.len())
        }
        let mut out = Vec::with_capacity(rows * n);
        for _ in 0..rows {
            out.extend_from_slice(b);
        }
        let threads = rayon::current_num_threads();
        let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        if rows > 0 && n > 0 {
            // SAFETY: all three buffers have exactly the extents described by the strides.
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    x.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr(),
                    k as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.matmul(w)?;
        let dw = dy.t()?.matmul(x)?;
        let db = sum_to_last(&dy)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Differentiable dense layer on a 2-D input (CPU f32).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, LinearOp)
}

#[cfg(test)]
mod linear_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn linear_value_and_gradients_match_candle() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (37, 24), &dev).unwrap();
        let w = Var::randn(0f32, 0.5, (13, 24), &dev).unwrap();
        let b = Var::randn(0f32, 0.5, 13, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (37, 13), &dev).unwrap();
        let a = linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        let c = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap().broadcast_add(b.as_tensor()).unwrap();
        let d: f32 = (&a - &c).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-5, "{d}");
        let ga = (a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (c * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            let d: f32 = (ga.get(v.as_tensor()).unwrap() - gc.get(v.as_tensor()).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-4, "{d}");
        }
    }

    #[test]
    fn column_sums() {
        let x = Tensor::arange(0f32, 12.0, &Device::Cpu).unwrap().reshape((4, 3)).unwrap();
        assert_eq!(sum_to_last(&x).unwrap().to_vec1::<f32>().unwrap(), vec![18.0, 22.0, 26.0]);
    }
}
