//! Exact (erf) GeLU as one parallel CPU kernel with its own backward.
//!
//! candle's `gelu_erf` evaluates libm's scalar `erff` on one thread, forward and again in
//! backward; in a MiniLM training step that was ~15% of the time (perf). Here
//! `gelu(x) = x·Φ(x)`, `gelu'(x) = Φ(x) + x·φ(x)`, with Φ from erf by Abramowitz & Stegun 7.1.26
//! (|error| ≤ 1.5e-7 in erf, below f32 resolution of the activations), chunked over rayon.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 13;

/// erf(x) by Abramowitz & Stegun 7.1.26.
#[inline]
fn erf(x: f32) -> f32 {
    let s = x.signum();
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let y = 1.0
        - (((((1.061_405_4 * t - 1.453_152_1) * t) + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6)
            * t
            * (-a * a).exp();
    s * y
}

#[inline]
fn cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn map(storage: &CpuStorage, layout: &Layout, f: impl Fn(f32) -> f32 + Sync) -> Result<(CpuStorage, Shape)> {
    let src = match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
        _ => candle_core::bail!("gelu: expected a contiguous f32 tensor"),
    };
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(o, s)| {
        for (o, &x) in o.iter_mut().zip(s) {
            *o = f(x);
        }
    });
    Ok((CpuStorage::F32(out), layout.shape().clone()))
}

struct GeluErf;
struct GeluErfGrad;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-par"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        map(s, l, |x| x * cdf(x))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let d = arg.apply_op1_no_bwd(&GeluErfGrad)?;
        Ok(Some(grad_res.mul(&d)?))
    }
}

impl CustomOp1 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "gelu-erf-grad-par"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        map(s, l, |x| cdf(x) + x * INV_SQRT_2PI * (-0.5 * x * x).exp())
    }
}

/// Exact GeLU with gradient; falls back to candle's op off the CPU/f32 path.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(GeluErf)
    } else {
        x.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_gelu_erf() {
        let x = Tensor::randn(0f32, 3.0, (4, 1000), &Device::Cpu).unwrap();
        let a = gelu_erf(&x).unwrap();
        let b = x.gelu_erf().unwrap();
        let d: f32 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn gradient_matches_finite_differences_and_candle() {
        let xs: Vec<f32> = (-50..=50).map(|i| i as f32 * 0.1).collect();
        let v = Var::from_slice(&xs, xs.len(), &Device::Cpu).unwrap();
        let g = gelu_erf(v.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let ours: Vec<f32> = g.get(v.as_tensor()).unwrap().to_vec1().unwrap();
        let g2 = v.as_tensor().gelu_erf().unwrap().sum_all().unwrap().backward().unwrap();
        let theirs: Vec<f32> = g2.get(v.as_tensor()).unwrap().to_vec1().unwrap();
        for (i, &x) in xs.iter().enumerate() {
            let x = x as f64;
            let f = |x: f64| x * 0.5 * (1.0 + libm_erf(x / std::f64::consts::SQRT_2));
            let fd = (f(x + 1e-4) - f(x - 1e-4)) / 2e-4;
            assert!((ours[i] as f64 - fd).abs() < 1e-5, "x={x}: {} vs fd {fd}", ours[i]);
            assert!((ours[i] - theirs[i]).abs() < 1e-5, "x={x}: {} vs candle {}", ours[i], theirs[i]);
        }
    }

    /// f64 erf by its Maclaurin series, accurate (no cancellation to speak of) for
    /// the test domain |x/√2| ≤ 3.6.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        // erf x = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
        let mut sum: f64 = 0.0;
        let mut term = x;
        let mut n: f64 = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
