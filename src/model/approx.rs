//! The activation and attention-normalisation functions of the model, exact and MPC-friendly.
//!
//! Definitions follow MPCFormer's training code (spec §1.1):
//! - `quad(x) = 0.125·x² + 0.25·x + 0.5` replaces GeLU;
//! - `2quad`: `p_i = (s_i + c)²·m_i / Σ_j (s_j + c)²·m_j`, c = 5 by default, m the 0/1 key mask;
//! - `2relu`: `p_i = (relu(s_i) + ε/L) / (Σ_j relu(s_j) + ε)`, ε = 1e-12, on additively masked scores.
//!
//! Masking belongs to the softmax kind: softmax and 2ReLU take the additive mask (−1e4 on padded
//! keys, as MPCFormer), 2Quad multiplies by the 0/1 mask after squaring, because (−1e4 + c)² would
//! turn a masked key into the heaviest one.
//!
//! Every function here is built from candle ops that have a backward pass; in evaluation mode
//! the fused softmax kernel is used instead (same values, no autograd needed).

use candle_core::{Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// Additive mask value for padded keys (MPCFormer's −1e4; exp underflows to exactly 0).
pub const MASK_VALUE: f64 = -10_000.0;
/// The ε of MPCFormer's 2ReLU.
pub const TWO_RELU_EPS: f64 = 1e-12;
/// MPCFormer's default shift c of 2Quad.
pub const DEFAULT_TWO_QUAD_C: f64 = 5.0;

/// Feed-forward activation (`hidden_act` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GeLU, x·Φ(x) with erf (HF "gelu").
    #[serde(rename = "gelu")]
    Gelu,
    /// tanh approximation of GeLU (HF "gelu_new", "gelu_pytorch_tanh", "gelu_fast").
    #[serde(
        rename = "gelu_new",
        alias = "gelu_pytorch_tanh",
        alias = "gelu_fast",
        alias = "tanh"
    )]
    GeluNew,
    #[serde(rename = "relu")]
    Relu,
    /// MPCFormer's Quad: 0.125x² + 0.25x + 0.5.
    #[serde(rename = "quad")]
    Quad,
}

impl HiddenAct {
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            HiddenAct::Gelu => super::gelu::gelu_erf(x),
            HiddenAct::GeluNew => x.gelu(),
            HiddenAct::Relu => x.relu(),
            HiddenAct::Quad => quad(x),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HiddenAct::Gelu => "gelu",
            HiddenAct::GeluNew => "gelu_new",
            HiddenAct::Relu => "relu",
            HiddenAct::Quad => "quad",
        }
    }
}

impl std::str::FromStr for HiddenAct {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("unknown hidden_act '{s}' (expected gelu, gelu_new, relu, quad)"))
    }
}

/// Attention normalisation (`softmax_act` in config.json; absent means softmax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SoftmaxAct {
    #[default]
    #[serde(rename = "softmax")]
    Softmax,
    #[serde(rename = "2relu")]
    TwoRelu,
    #[serde(rename = "2quad")]
    TwoQuad,
}

impl SoftmaxAct {
    pub fn name(self) -> &'static str {
        match self {
            SoftmaxAct::Softmax => "softmax",
            SoftmaxAct::TwoRelu => "2relu",
            SoftmaxAct::TwoQuad => "2quad",
        }
    }

    /// Normalise attention scores over the key axis (last dim).
    ///
    /// * `scores` — scaled scores Q·Kᵀ/√d, **without** any mask, shape [B, H, Lq, Lk].
    /// * `additive` — [B, 1, 1, Lk], 0 for real keys and [`MASK_VALUE`] for padding.
    /// * `mask01` — [B, 1, 1, Lk], 1 for real keys and 0 for padding.
    /// * `c` — the 2Quad shift.
    /// * `fused` — allowed to use candle's fused softmax (no backward; evaluation only).
    pub fn forward(
        self,
        scores: &Tensor,
        additive: &Tensor,
        mask01: &Tensor,
        c: f64,
        fused: bool,
    ) -> Result<Tensor> {
        match self {
            SoftmaxAct::Softmax => {
                let s = scores.broadcast_add(additive)?;
                if fused {
                    candle_nn::ops::softmax_last_dim(&s)
                } else if super::fused::applies(&s) {
                    super::fused::softmax_last_dim(&s)
                } else {
                    candle_nn::ops::softmax(&s, D::Minus1)
                }
            }
            SoftmaxAct::TwoRelu => {
                let r = scores.broadcast_add(additive)?.relu()?;
                let l = r.dim(D::Minus1)? as f64;
                let den = (r.sum_keepdim(D::Minus1)? + TWO_RELU_EPS)?;
                (r + TWO_RELU_EPS / l)?.broadcast_div(&den)
            }
            SoftmaxAct::TwoQuad => super::fused_approx::two_quad(scores, mask01, c),
        }
    }
}

impl std::str::FromStr for SoftmaxAct {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("unknown softmax_act '{s}' (expected softmax, 2relu, 2quad)"))
    }
}

/// MPCFormer's Quad: 0.125x² + 0.25x + 0.5.
pub fn quad(x: &Tensor) -> Result<Tensor> {
    super::fused_approx::quad(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn row(act: SoftmaxAct) -> Vec<f32> {
        // The spec's reference vector: scores [1, −2, 0.5, 3], mask [1, 1, 1, 0].
        let dev = Device::Cpu;
        let s = Tensor::new(&[[[[1f32, -2.0, 0.5, 3.0]]]], &dev).unwrap();
        let m01 = Tensor::new(&[[[[1f32, 1.0, 1.0, 0.0]]]], &dev).unwrap();
        let add = ((1.0 - &m01).unwrap() * MASK_VALUE).unwrap();
        act.forward(&s, &add, &m01, DEFAULT_TWO_QUAD_C, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn spec_reference_vectors() {
        close(&row(SoftmaxAct::Softmax), &[0.6037, 0.0301, 0.3662, 0.0], 1e-4);
        close(&row(SoftmaxAct::TwoQuad), &[0.4784, 0.1196, 0.4020, 0.0], 1e-4);
        close(&row(SoftmaxAct::TwoRelu), &[0.6667, 0.0, 0.3333, 0.0], 1e-4);
    }

    #[test]
    fn fused_and_composed_softmax_agree() {
        let dev = Device::Cpu;
        let s = Tensor::randn(0f32, 3.0, (2, 3, 5, 7), &dev).unwrap();
        let m01 = Tensor::new(&[1f32, 1., 1., 1., 0., 0., 0.], &dev)
            .unwrap()
            .reshape((1, 1, 1, 7))
            .unwrap()
            .broadcast_as((2, 1, 1, 7))
            .unwrap()
            .contiguous()
            .unwrap();
        let add = ((1.0 - &m01).unwrap() * MASK_VALUE).unwrap();
        let a = SoftmaxAct::Softmax.forward(&s, &add, &m01, 5.0, true).unwrap();
        let b = SoftmaxAct::Softmax.forward(&s, &add, &m01, 5.0, false).unwrap();
        let d: f32 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn quad_values() {
        let x = Tensor::new(&[0f32, -1.0, -4.0, 4.0], &Device::Cpu).unwrap();
        let y: Vec<f32> = quad(&x).unwrap().to_vec1().unwrap();
        assert_eq!(y, vec![0.5, 0.375, 1.5, 3.5]);
    }

    #[test]
    fn names_round_trip() {
        for a in [HiddenAct::Gelu, HiddenAct::GeluNew, HiddenAct::Relu, HiddenAct::Quad] {
            assert_eq!(a.name().parse::<HiddenAct>().unwrap(), a);
        }
        for a in [SoftmaxAct::Softmax, SoftmaxAct::TwoRelu, SoftmaxAct::TwoQuad] {
            assert_eq!(a.name().parse::<SoftmaxAct>().unwrap(), a);
        }
        assert_eq!("gelu_pytorch_tanh".parse::<HiddenAct>().unwrap(), HiddenAct::GeluNew);
        assert!("swish".parse::<HiddenAct>().is_err());
    }
}
