//! Private BERT encoder layer, mirroring `model/bert.rs` (`BertLayer`) step for step:
//! Q/K/V projections, per-head scores, attention normalisation (softmax, 2Quad, 2ReLU), context,
//! output projection + residual + LayerNorm, FFN with GeLU (erf or tanh form), Quad or ReLU,
//! projection + residual + LayerNorm. Batch 1 without padding (private inference sends exactly
//! the client's tokens). The whole model (embeddings, pooler, classifier) is in `mpc::model`.
//!
//! Weights arrive as this party's shares under HF names (see [`share_weights`]); linear weights
//! are stored transposed ([in, out]) and prepared once (weight-mask reuse). The 1/√d score scale
//! is folded into the query weights and bias by the model owner before sharing.

use std::collections::HashMap;

use super::approx::{gelu, quad_raw, reciprocal_ext_to, row_sums, softmax, two_relu, GeluForm};
use super::protocol::{truncate, Shift};
use super::channel::ChannelError;
use super::compare::relu;
use super::fixed::encode;
use super::norm::layer_norm;
use super::party::{Party, Share};
use super::protocol::{
    matmul_many_raw, matmul_weights, matmul_weights_raw, prepare_vector, prepare_weight, truncate_many, TruncMatmul, VecShare, WeightShare,
};
use super::ring::RingTensor;
use crate::model::{BertConfig, HiddenAct, SoftmaxAct};

/// Errors of the private model.
#[derive(Debug, thiserror::Error)]
pub enum PrivateModelError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("weight share '{0}' is missing")]
    Missing(String),
    #[error("{act} is not supported under MPC")]
    Unsupported { act: String },
    #[error("token id {id} at position {pos} is outside the vocabulary ({vocab})")]
    TokenOutOfRange { id: u32, pos: usize, vocab: usize },
    #[error("{what}: {got} exceeds the model's {max}")]
    TooLong { what: &'static str, got: usize, max: usize },
    #[error("the client failed: {0}")]
    Client(String),
    #[error("invalid setting: {0}")]
    Setting(String),
}

/// Encode a model's f32 parameters and split them into two additive shares each (the model
/// owner's step). Linear weights are transposed to [in, out]; query weight and bias are
/// pre-scaled by 1/√head_dim.
pub fn share_weights(
    named: &[(String, Vec<usize>, Vec<f32>)],
    cfg: &BertConfig,
    frac: u32,
) -> [HashMap<String, RingTensor>; 2] {
    let scale = 1.0 / (cfg.head_dim() as f64).sqrt();
    let mut out = [HashMap::new(), HashMap::new()];
    for (name, shape, vals) in named {
        let q = name.contains("attention.self.query");
        let s = if q { scale } else { 1.0 };
        let enc: Vec<u64> = vals.iter().map(|&v| encode(v as f64 * s, frac)).collect();
        let t = if shape.len() == 2 && !name.contains("embeddings") {
            RingTensor::new(shape, enc).transpose()
        } else {
            RingTensor::new(shape, enc)
        };
        let (a, b) = super::run::share_public(&t);
        out[0].insert(name.clone(), a);
        out[1].insert(name.clone(), b);
    }
    out
}

pub(crate) struct PrivateLinear {
    pub(crate) w: WeightShare,
    pub(crate) b: Share,
}

impl PrivateLinear {
    /// x·W + b untruncated (scale x.frac + W's), the bias raised to that scale: one round (the
    /// opening of x − A) for a consumer that absorbs the truncation.
    pub(crate) fn forward_raw(&self, p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
        let raw = matmul_weights_raw(p, x, &[&self.w])?.remove(0);
        let b = Share { ring: self.b.ring.scale(1u64 << self.w.frac), frac: raw.frac };
        Ok(add_bias(raw, &b))
    }
}

/// y + x with y untruncated (scale ≥ x's): x raised to y's scale (exact).
fn residual_raw(y: &Share, x: &Share) -> Share {
    Share { ring: y.ring.add(&x.ring.scale(1u64 << (y.frac - x.frac))), frac: y.frac }
}

pub(crate) fn get(shares: &HashMap<String, RingTensor>, name: &str, frac: u32) -> Result<Share, PrivateModelError> {
    shares.get(name).map(|r| Share { ring: r.clone(), frac }).ok_or_else(|| PrivateModelError::Missing(name.into()))
}

pub(crate) fn linear(
    p: &mut Party,
    shares: &HashMap<String, RingTensor>,
    prefix: &str,
    id: u64,
    frac: u32,
) -> Result<PrivateLinear, PrivateModelError> {
    let w = get(shares, &format!("{prefix}.weight"), frac)?;
    Ok(PrivateLinear { w: prepare_weight(p, &w, id)?, b: get(shares, &format!("{prefix}.bias"), frac)? })
}

pub(crate) fn add_bias(y: Share, b: &Share) -> Share {
    let n = b.ring.len();
    let data = y.ring.data.iter().enumerate().map(|(i, &v)| v.wrapping_add(b.ring.data[i % n])).collect();
    Share { ring: RingTensor::new(&y.ring.shape, data), frac: y.frac }
}

/// Columns [c0, c0 + w) of a [rows, cols] share (local).
fn cols(x: &Share, c0: usize, w: usize) -> Share {
    let (rows, c) = (x.ring.shape[0], x.ring.shape[1]);
    let data = (0..rows).flat_map(|r| x.ring.data[r * c + c0..r * c + c0 + w].iter().copied()).collect();
    Share { ring: RingTensor::new(&[rows, w], data), frac: x.frac }
}

/// Bound on the attention scores s = q·k/√d_h in real terms, |s| < 2^SCORE_BITS, which lets
/// their truncation (and 2Quad's of (s + c)²) run in a narrower ring (`protocol::Shift`): the
/// opening then carries the bits between the shift and the bound, not everything up to bit
/// 63. 2^11 = 2048 is ~100× what trained BERT models produce (their scores stay within a
/// few tens; `kd private-eval` checks the plaintext twin's scores against it before the private
/// pass) and leaves 2Quad's (s + c)² below 2^23. At 16 fractional bits the scores' opening
/// sends 30 bits per element instead of 49, q's 42 (at 18 bits: 32 and 44 instead of 47).
pub const SCORE_BITS: u32 = 11;

/// A truncation by `f` bits of a value at scale `frac` whose real magnitude is below 2^bits.
fn bounded_shift(f: u32, frac: u32, bits: u32) -> Shift {
    Shift::narrow(f, (frac + bits + 2).min(64))
}

/// 2Quad attention of all heads, from the untruncated scores `raw` [heads·L, L] (scale f +
/// `shift`) and the values `vh` (per head [L, dh]): per head (q·V)·(1/Σq) with q = (s + c)²,
/// instead of (q·(1/Σq))·V — the normalisation is applied to the [L, dh] context, not to the
/// [L, L] probabilities, which saves one L×L opening per head (the product with the row
/// factors and its truncation now run on L×dh values), in 11 rounds:
/// [trunc scores; square] (softmax) … reciprocal of Σq (8), with [trunc q] and [q·V] riding in
/// its first two rounds (`protocol::TruncMatmul`; they do not depend on it) …
/// [trunc q·V; its product with 1/Σq] [trunc]. q·V is formed from q truncated to scale f:
/// |Σ q·v| < 2^(62 − 2f) in real terms (2^26 at f = 18), and the context values |Σ P·v| < 2^9.
fn two_quad_attention(p: &mut Party, raw: &Share, shift: u32, c: f64, vh: &[Share]) -> Result<Vec<Share>, PrivateModelError> {
    use super::fused::{truncate_mul, Operand};
    use super::party::LayerClass::*;
    let f = raw.frac - shift;
    let (rows, l) = (raw.ring.shape[0], raw.ring.shape[1]);
    let heads = vh.len();
    let dh = vh[0].ring.shape[1];
    p.set_class(Softmax);
    let sc = Operand::Trunc { idx: 0, scale: 1, offset: super::fixed::encode(c, f) };
    let (_, mut q) = truncate_mul(p, &[(raw, bounded_shift(shift, raw.frac, SCORE_BITS))], &[(sc, sc)])?;
    let q = q.pop().expect("one product");
    let sums = row_sums(&q);
    // q truncated to f and its products with V need nothing from the reciprocal of Σq: their two
    // openings ride in the reciprocal's first two rounds (booked to attention).
    // (s + c)² < (2^SCORE_BITS + |c|)² in real terms (< 2^23 for any c below 848).
    let q_bits = (2.0 * ((1u64 << SCORE_BITS) as f64 + c.abs()).log2()).ceil() as u32;
    let rider = TruncMatmul::new(p, &q, bounded_shift(q.frac - f, q.frac, q_bits), vh.to_vec(), Attention)?;
    p.attach_rider(Box::new(rider));
    // 1/Σq at 16 extra bits (12 at f = 20): the product with q·V (≤ max|v| in real terms) sits at
    // 2f + extra and stays below 2^62 while |v| < 2^(61 − 2f − extra) = 2^9.
    let extra = (61 - 2 * f).saturating_sub(9).min(16);
    let inv = reciprocal_ext_to(p, &sums, extra, f)?;
    let qv = p.detach_rider::<TruncMatmul>()?.products;
    p.set_class(Attention);
    // One factor per (head, query row), broadcast over the row's dh context values (head-major,
    // as the stacked rows): only the [heads·L] factors are opened, not [heads·L·dh].
    let qv_all = Share { ring: RingTensor::new(&[rows * dh], qv.iter().flat_map(|s| s.ring.data.iter().copied()).collect()), frac: 2 * f };
    let (_, mut z) = truncate_mul(p, &[(&qv_all, f)], &[(Operand::t(0), Operand::Ready(&inv))])?;
    let ctx = truncate(p, &z.pop().expect("one product"), f + extra)?;
    Ok((0..heads)
        .map(|i| Share { ring: RingTensor::new(&[l, dh], ctx.ring.data[i * l * dh..(i + 1) * l * dh].to_vec()), frac: f })
        .collect())
}

/// Shares of [rows, cᵢ] matrices side by side: [rows, Σcᵢ] (local).
fn concat_cols(parts: &[Share]) -> Share {
    let rows = parts[0].ring.shape[0];
    let width: usize = parts.iter().map(|s| s.ring.shape[1]).sum();
    let mut data = Vec::with_capacity(rows * width);
    for r in 0..rows {
        for s in parts {
            let c = s.ring.shape[1];
            data.extend_from_slice(&s.ring.data[r * c..(r + 1) * c]);
        }
    }
    Share { ring: RingTensor::new(&[rows, width], data), frac: parts[0].frac }
}

/// One private encoder layer.
pub struct PrivateLayer {
    /// Query, key and value as one [H, 3H] weight and [3H] bias: the three products share their
    /// input, so one mask A serves them and x − A (L×H words) is opened once per layer instead
    /// of three times; the dealer's C = A·[B_Q | B_K | B_V] and the GEMMs are the same work.
    qkv: PrivateLinear,
    attn_out: PrivateLinear,
    ln1: (VecShare, Share),
    inter: PrivateLinear,
    out: PrivateLinear,
    ln2: (VecShare, Share),
    heads: usize,
    act: HiddenAct,
    softmax: SoftmaxAct,
    c: f64,
    eps: f64,
}

impl PrivateLayer {
    /// Prepare layer `i` from this party's weight shares (opens each W − B once).
    pub fn prepare(
        p: &mut Party,
        shares: &HashMap<String, RingTensor>,
        cfg: &BertConfig,
        i: usize,
        frac: u32,
    ) -> Result<Self, PrivateModelError> {
        let pre = format!("bert.encoder.layer.{i}");
        let id = |k: u64| (i as u64) * 16 + k;
        let l = |p: &mut Party, name: &str, k| linear(p, shares, &format!("{pre}.{name}"), id(k), frac);
        let part = |name: &str, what: &str| get(shares, &format!("{pre}.attention.self.{name}.{what}"), frac);
        let qkv_w = concat_cols(&[part("query", "weight")?, part("key", "weight")?, part("value", "weight")?]);
        let qkv_b: Vec<u64> = ["query", "key", "value"]
            .iter()
            .map(|n| part(n, "bias"))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flat_map(|b| b.ring.data)
            .collect();
        let qkv_b = Share { ring: RingTensor::new(&[qkv_b.len()], qkv_b), frac };
        Ok(Self {
            qkv: PrivateLinear { w: prepare_weight(p, &qkv_w, id(0))?, b: qkv_b },
            attn_out: l(p, "attention.output.dense", 3)?,
            ln1: (
                prepare_vector(p, &get(shares, &format!("{pre}.attention.output.LayerNorm.weight"), frac)?, id(6))?,
                get(shares, &format!("{pre}.attention.output.LayerNorm.bias"), frac)?,
            ),
            inter: l(p, "intermediate.dense", 4)?,
            out: l(p, "output.dense", 5)?,
            ln2: (
                prepare_vector(p, &get(shares, &format!("{pre}.output.LayerNorm.weight"), frac)?, id(7))?,
                get(shares, &format!("{pre}.output.LayerNorm.bias"), frac)?,
            ),
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
            softmax: cfg.softmax_act,
            c: cfg.softmax_2quad_c,
            eps: cfg.layer_norm_eps,
        })
    }

    /// x [L, H] → [L, H].
    pub fn forward(&self, p: &mut Party, x: &Share) -> Result<Share, PrivateModelError> {
        use super::party::LayerClass::*;
        let (l, h) = (x.ring.shape[0], x.ring.shape[1]);
        let dh = h / self.heads;
        p.set_class(Linear);
        // [L, 3H]: q in columns [0, H), k in [H, 2H), v in [2H, 3H).
        let qkv = add_bias(matmul_weights(p, x, &[&self.qkv.w])?.remove(0), &self.qkv.b);
        p.set_class(Attention);
        let qh: Vec<Share> = (0..self.heads).map(|i| cols(&qkv, i * dh, dh)).collect();
        let kt: Vec<Share> = (0..self.heads)
            .map(|i| {
                let c = cols(&qkv, h + i * dh, dh);
                Share { ring: c.ring.transpose(), frac: c.frac }
            })
            .collect();
        let pairs: Vec<(&Share, &Share)> = qh.iter().zip(&kt).collect();
        let raw = matmul_many_raw(p, &pairs)?;
        // All heads' rows normalised together: [heads·L, L].
        let stack = |s: &[Share]| Share {
            ring: RingTensor::new(&[self.heads * l, l], s.iter().flat_map(|s| s.ring.data.iter().copied()).collect()),
            frac: s[0].frac,
        };
        let vh: Vec<Share> = (0..self.heads).map(|i| cols(&qkv, 2 * h + i * dh, dh)).collect();
        let ctx_h = match self.softmax {
            SoftmaxAct::TwoQuad => two_quad_attention(p, &stack(&raw), x.frac, self.c, &vh)?,
            act => {
                let scores = stack(&truncate_many(p, &raw, bounded_shift(x.frac, raw[0].frac, SCORE_BITS))?);
                p.set_class(Softmax);
                let probs = match act {
                    SoftmaxAct::TwoRelu => two_relu(p, &scores)?,
                    _ => softmax(p, &scores)?,
                };
                p.set_class(Attention);
                let ph: Vec<Share> = (0..self.heads)
                    .map(|i| Share {
                        ring: RingTensor::new(&[l, l], probs.ring.data[i * l * l..(i + 1) * l * l].to_vec()),
                        frac: probs.frac,
                    })
                    .collect();
                let pairs: Vec<(&Share, &Share)> = ph.iter().zip(&vh).collect();
                let raw = matmul_many_raw(p, &pairs)?;
                truncate_many(p, &raw, x.frac)?
            }
        };
        let mut ctx = vec![0u64; l * h];
        for (i, c) in ctx_h.iter().enumerate() {
            for r in 0..l {
                ctx[r * h + i * dh..r * h + (i + 1) * dh].copy_from_slice(&c.ring.data[r * dh..(r + 1) * dh]);
            }
        }
        let ctx = Share { ring: RingTensor::new(&[l, h], ctx), frac: x.frac };
        p.set_class(Linear);
        // The projection stays untruncated (scale 2f) with bias and residual raised to it:
        // LayerNorm's centring truncation absorbs the projection's.
        let ao = self.attn_out.forward_raw(p, &ctx)?;
        p.set_class(LayerNorm);
        let a = layer_norm(p, &residual_raw(&ao, x), &self.ln1.0, &self.ln1.1, self.eps, x.frac)?;
        p.set_class(Linear);
        let i = if self.act == HiddenAct::Quad {
            // The bias enters before the truncation (at scale 2f), which rides in the round of
            // Quad's square (booked as activation).
            let raw = self.inter.forward_raw(p, &a)?;
            p.set_class(Activation);
            quad_raw(p, &raw, self.inter.w.frac)?
        } else {
            let i = add_bias(matmul_weights(p, &a, &[&self.inter.w])?.remove(0), &self.inter.b);
            p.set_class(Activation);
            match self.act {
                HiddenAct::Relu => relu(p, &i)?,
                HiddenAct::Gelu => gelu(p, &i, GeluForm::Erf)?,
                HiddenAct::GeluNew => gelu(p, &i, GeluForm::Tanh)?,
                HiddenAct::Quad => unreachable!("handled above"),
            }
        };
        p.set_class(Linear);
        let o = self.out.forward_raw(p, &i)?;
        p.set_class(LayerNorm);
        Ok(layer_norm(p, &residual_raw(&o, &a), &self.ln2.0, &self.ln2.1, self.eps, a.frac)?)
    }
}
