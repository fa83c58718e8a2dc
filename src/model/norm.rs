//! LayerNorm, `(x − mean)/√(var + eps)·w + b` with the biased variance (BERT's, spec §1.1).
//!
//! candle's `LayerNorm::forward` takes a fused kernel without backward whenever the input is
//! contiguous, silently freezing every parameter upstream (candle #3011, #3752). Training uses
//! our fused op with a hand-written backward (`fused.rs`; the composed form is its reference and
//! the fallback off the CPU); evaluation may use candle's kernel, which computes the same values.

use candle_core::{Result, Tensor, D};

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(vb: candle_nn::VarBuilder, size: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    /// `fused` selects candle's kernel (no gradient); use it only outside training.
    pub fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        if fused {
            return candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32);
        }
        if super::fused::applies(x) {
            return super::fused::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
        self.forward_composed(x)
    }

    /// The same function from differentiable candle ops (reference, and non-CPU fallback).
    pub fn forward_composed(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(D::Minus1)? as f64;
        let mean = (x.sum_keepdim(D::Minus1)? / n)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / n)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn composed_matches_fused_and_candle_layer_norm() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 5, 16), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 16, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 16, &dev).unwrap();
        let ln = LayerNorm { weight: w.clone(), bias: b.clone(), eps: 1e-12 };
        let a = ln.forward(&x, false).unwrap();
        let f = ln.forward(&x, true).unwrap();
        let c = candle_nn::LayerNorm::new(w, b, 1e-12).forward_t(&x).unwrap();
        for other in [f, c] {
            let d: f32 = (&a - other).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(d < 1e-5, "{d}");
        }
    }

    trait Fwd {
        fn forward_t(&self, x: &Tensor) -> Result<Tensor>;
    }
    impl Fwd for candle_nn::LayerNorm {
        fn forward_t(&self, x: &Tensor) -> Result<Tensor> {
            candle_core::Module::forward(self, x)
        }
    }

    #[test]
    fn composed_form_has_gradients_for_input_and_parameters() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (2, 8), &dev).unwrap();
        let w = Var::ones(8, candle_core::DType::F32, &dev).unwrap();
        let b = Var::zeros(8, candle_core::DType::F32, &dev).unwrap();
        let ln = LayerNorm { weight: w.as_tensor().clone(), bias: b.as_tensor().clone(), eps: 1e-5 };
        let target = Tensor::randn(0f32, 1.0, (2, 8), &dev).unwrap();
        let loss = (ln.forward(x.as_tensor(), false).unwrap() * target).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        for v in [&x, &w, &b] {
            let n: f32 = g.get(v.as_tensor()).expect("gradient").abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(n > 0.0);
        }
    }
}
