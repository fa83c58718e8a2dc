//! BERT for sequence classification: one struct per HF submodule, named as in HF's
//! `modeling_bert.py` (`bert.embeddings.word_embeddings.weight`, `bert.encoder.layer.N…`,
//! `bert.pooler.dense`, `classifier`), so HF checkpoints load without renaming.
//!
//! Forward semantics follow transformers 4.44 `BertForSequenceClassification` (eager attention):
//! post-LN residual blocks, dropout on embeddings / attention probabilities / block outputs /
//! pooled output in training only, pooler = tanh(W·h[:,0] + b). The returned [`ModelOutput`]
//! carries what layer-wise distillation needs (MPCFormer spec §2.2): all L+1 hidden states
//! (embedding output first) and, on request, the L pre-normalisation attention scores
//! (scaled by 1/√d and with the additive −1e4 mask on padded keys).
//!
//! Token-wise layers run on the real tokens only (`pack.rs`): padded slots are never computed,
//! which gives real tokens the same values because softmax and 2Quad mask padded keys (2ReLU
//! gives them weight, so 2ReLU models compute every slot).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Embedding, Init, VarBuilder};

use super::approx::{HiddenAct, SoftmaxAct, MASK_VALUE};
use super::config::BertConfig;
use super::norm::LayerNorm;
use super::pack::Packing;
use super::rng::Mode;

/// A dense layer `y = x·Wᵀ + b` on the last axis, as one GEMM over all leading axes.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", Init::Const(0.0))?;
        let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        let x2 = x.reshape((rows, in_dim))?;
        let y = if super::fused::applies(&x2) {
            super::fused::linear(&x2, &self.weight, &self.bias)?
        } else {
            x2.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?
        };
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = self.weight.dim(0)?;
        y.reshape(out)
    }
}

fn embedding(vb: VarBuilder, n: usize, d: usize) -> Result<Embedding> {
    let w = vb.get_with_hints((n, d), "weight", Init::Const(0.0))?;
    Ok(Embedding::new(w, d))
}

/// Token ids, segment ids and the 0/1 padding mask of a batch, all [B, L].
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    pub attention_mask: Tensor,
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// [B, num_labels] (regression: [B, 1]).
    pub logits: Tensor,
    /// [B, H]: tanh pooler output, before classifier dropout.
    pub pooled: Tensor,
    /// L+1 tensors [B, L, H] (only when requested): embedding output, then each layer's output
    /// (zeros at padded slots, which are not computed — except under 2ReLU; see `pack.rs`).
    pub hidden_states: Vec<Tensor>,
    /// L tensors [B, heads, L, L] (only when requested): scaled scores + additive mask.
    pub attention_scores: Vec<Tensor>,
}

// https://github.com/huggingface/transformers/blob/v4.44.2/src/transformers/models/bert/modeling_bert.py#L180
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(Self {
            word_embeddings: embedding(vb.pp("word_embeddings"), cfg.vocab_size, cfg.hidden_size)?,
            position_embeddings: embedding(
                vb.pp("position_embeddings"),
                cfg.max_position_embeddings,
                cfg.hidden_size,
            )?,
            token_type_embeddings: embedding(
                vb.pp("token_type_embeddings"),
                cfg.type_vocab_size,
                cfg.hidden_size,
            )?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// Embeddings of the computed tokens of a [B, L] batch: [N, H] in `pack`'s order.
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, pack: &Packing, mode: &mut Mode) -> Result<Tensor> {
        let pos = pack.positions(input_ids.device())?;
        let words = candle_core::Module::forward(&self.word_embeddings, &pack.pack(input_ids)?)?;
        let types = candle_core::Module::forward(&self.token_type_embeddings, &pack.pack(token_type_ids)?)?;
        let pos = candle_core::Module::forward(&self.position_embeddings, &pos)?;
        let e = ((words + types)? + pos)?;
        let e = self.layer_norm.forward(&e, !mode.is_train())?;
        mode.dropout(&e, self.dropout)
    }
}

// modeling_bert.py#L220 (BertSelfAttention, eager path)
#[derive(Debug, Clone)]
pub struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: usize,
    head_dim: usize,
    dropout: f64,
    softmax_act: SoftmaxAct,
    two_quad_c: f64,
}

impl BertSelfAttention {
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            query: Linear::load(vb.pp("query"), h, h)?,
            key: Linear::load(vb.pp("key"), h, h)?,
            value: Linear::load(vb.pp("value"), h, h)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            dropout: cfg.attention_probs_dropout_prob,
            softmax_act: cfg.softmax_act,
            two_quad_c: cfg.softmax_2quad_c,
        })
    }

    /// Query, key and value as one [N, 3H] product (one GEMM instead of three; the gradients
    /// of the three weights are the slices of the fused one).
    fn qkv(&self, x: &Tensor) -> Result<Tensor> {
        let weight = Tensor::cat(&[&self.query.weight, &self.key.weight, &self.value.weight], 0)?;
        let bias = Tensor::cat(&[&self.query.bias, &self.key.bias, &self.value.bias], 0)?;
        Linear { weight, bias }.forward(x)
    }

    /// x: the computed tokens [N, H]. Returns the context [N, H] and, if asked, the masked
    /// pre-normalisation scores [B, h, L, L].
    pub fn forward(
        &self,
        x: &Tensor,
        pack: &Packing,
        masks: &Masks,
        mode: &mut Mode,
        with_scores: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, l) = (pack.batch(), pack.padded_len());
        let (n, h) = x.dims2()?;
        // [B, L, 3, heads, d] with zeros in padded slots (masked keys; their queries are unread).
        let qkv = pack.unpack(&self.qkv(x)?)?.reshape((b, l, 3, self.heads, self.head_dim))?;
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (super::bmm::bmm(&q, &k.t()?)? * scale)?;
        let probs = self.softmax_act.forward(
            &scores,
            &masks.additive,
            &masks.zero_one,
            self.two_quad_c,
            !mode.is_train(),
        )?;
        let probs = mode.dropout(&probs, self.dropout)?;
        let ctx = pack.pack(&super::bmm::bmm(&probs, &v)?.transpose(1, 2)?)?.reshape((n, h))?;
        let masked = if with_scores { Some(scores.broadcast_add(&masks.additive)?) } else { None };
        Ok((ctx, masked))
    }
}

/// The two forms of the key padding mask, [B, 1, 1, L].
pub struct Masks {
    pub zero_one: Tensor,
    pub additive: Tensor,
}

impl Masks {
    pub fn new(attention_mask: &Tensor, dtype: DType) -> Result<Self> {
        let (b, l) = attention_mask.dims2()?;
        let zero_one = attention_mask.to_dtype(dtype)?.reshape((b, 1, 1, l))?;
        let additive = ((1.0 - &zero_one)? * MASK_VALUE)?;
        Ok(Self { zero_one, additive })
    }
}

/// Dense → dropout → residual → LayerNorm (HF's BertSelfOutput and BertOutput).
#[derive(Debug, Clone)]
pub struct BertResidualOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl BertResidualOutput {
    pub fn load(vb: VarBuilder, cfg: &BertConfig, in_dim: usize) -> Result<Self> {
        Ok(Self {
            dense: Linear::load(vb.pp("dense"), in_dim, cfg.hidden_size)?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    pub fn forward(&self, x: &Tensor, residual: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let y = mode.dropout(&self.dense.forward(x)?, self.dropout)?;
        self.layer_norm.forward(&(y + residual)?, !mode.is_train())
    }
}

// modeling_bert.py#L453 (BertLayer = attention + intermediate + output)
#[derive(Debug, Clone)]
pub struct BertLayer {
    self_attention: BertSelfAttention,
    attention_output: BertResidualOutput,
    intermediate: Linear,
    act: HiddenAct,
    output: BertResidualOutput,
}

impl BertLayer {
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(Self {
            self_attention: BertSelfAttention::load(vb.pp("attention.self"), cfg)?,
            attention_output: BertResidualOutput::load(vb.pp("attention.output"), cfg, cfg.hidden_size)?,
            intermediate: Linear::load(vb.pp("intermediate.dense"), cfg.hidden_size, cfg.intermediate_size)?,
            act: cfg.hidden_act,
            output: BertResidualOutput::load(vb.pp("output"), cfg, cfg.intermediate_size)?,
        })
    }

    /// x: the computed tokens [N, H] of the batch described by `pack`; returns the layer output [N, H].
    pub fn forward_packed(
        &self,
        x: &Tensor,
        pack: &Packing,
        masks: &Masks,
        mode: &mut Mode,
        with_scores: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (ctx, scores) = self.self_attention.forward(x, pack, masks, mode, with_scores)?;
        let a = self.attention_output.forward(&ctx, x, mode)?;
        let i = self.act.forward(&self.intermediate.forward(&a)?)?;
        let o = self.output.forward(&i, &a, mode)?;
        Ok((o, scores))
    }

    /// The same on a padded [B, L, H] input, every slot computed (as HF does).
    pub fn forward(
        &self,
        x: &Tensor,
        masks: &Masks,
        mode: &mut Mode,
        with_scores: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, l, _) = x.dims3()?;
        let pack = Packing::dense(b, l);
        let (o, s) = self.forward_packed(&pack.pack(x)?, &pack, masks, mode, with_scores)?;
        Ok((pack.unpack(&o)?, s))
    }
}

/// The BERT backbone (HF's BertModel): embeddings, encoder layers, pooler.
#[derive(Debug, Clone)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
    pooler: Linear,
}

impl BertModel {
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(vb.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: BertEmbeddings::load(vb.pp("embeddings"), cfg)?,
            layers,
            pooler: Linear::load(vb.pp("pooler.dense"), cfg.hidden_size, cfg.hidden_size)?,
        })
    }
}

/// HF's BertForSequenceClassification.
#[derive(Debug, Clone)]
pub struct BertForSequenceClassification {
    pub bert: BertModel,
    classifier: Linear,
    classifier_dropout: f64,
    pub num_labels: usize,
}

impl BertForSequenceClassification {
    /// `vb` is the root: parameters live under `bert.` and `classifier.`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, num_labels: usize) -> Result<Self> {
        Ok(Self {
            bert: BertModel::load(vb.pp("bert"), cfg)?,
            classifier: Linear::load(vb.pp("classifier"), cfg.hidden_size, num_labels)?,
            classifier_dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
            num_labels,
        })
    }

    /// Forward for the logits and pooled output only (fine-tuning, evaluation, stage 2).
    pub fn forward(&self, input: &ModelInput, mode: &mut Mode) -> Result<ModelOutput> {
        self.forward_with(input, mode, false)
    }

    /// Forward; `layerwise` also returns what layer-wise distillation reads: every hidden state
    /// and every layer's pre-normalisation attention scores (otherwise both lists are empty).
    pub fn forward_with(&self, input: &ModelInput, mode: &mut Mode, layerwise: bool) -> Result<ModelOutput> {
        let masks = Masks::new(&input.attention_mask, DType::F32)?;
        let pack = match self.bert.layers.first().map(|l| l.self_attention.softmax_act) {
            // 2ReLU gives padded keys weight ε/L (all of it when a query's real scores are all
            // ≤ 0), so their values matter: compute every slot, as the reference does.
            Some(SoftmaxAct::TwoRelu) => Packing::dense(input.input_ids.dim(0)?, input.input_ids.dim(1)?),
            _ => Packing::new(&input.attention_mask)?,
        };
        let mut h = self.bert.embeddings.forward(&input.input_ids, &input.token_type_ids, &pack, mode)?;
        let mut hidden_states = Vec::new();
        let mut attention_scores = Vec::new();
        if layerwise {
            hidden_states.push(pack.unpack(&h)?);
        }
        for layer in &self.bert.layers {
            let (o, s) = layer.forward_packed(&h, &pack, &masks, mode, layerwise)?;
            attention_scores.extend(s);
            if layerwise {
                hidden_states.push(pack.unpack(&o)?);
            }
            h = o;
        }
        let cls = pack.first_tokens(&h)?;
        let pooled = self.bert.pooler.forward(&cls)?.tanh()?;
        let dropped = mode.dropout(&pooled, self.classifier_dropout)?;
        let logits = self.classifier.forward(&dropped)?;
        Ok(ModelOutput { logits, pooled, hidden_states, attention_scores })
    }
}

/// Softmax-normalise along the last axis (helper for callers that need probabilities).
pub fn probabilities(logits: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(logits, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelDir;
    use candle_core::Device;

    /// The reference: every slot of the padded batch computed, as transformers does.
    fn forward_padded(m: &BertForSequenceClassification, input: &ModelInput, mode: &mut Mode) -> Result<(Tensor, Vec<Tensor>)> {
        let (b, l) = input.input_ids.dims2()?;
        let dense = Packing::dense(b, l);
        let masks = Masks::new(&input.attention_mask, DType::F32)?;
        let mut h = m.bert.embeddings.forward(&input.input_ids, &input.token_type_ids, &dense, mode)?;
        h = dense.unpack(&h)?;
        let mut hs = vec![h.clone()];
        for layer in &m.bert.layers {
            h = layer.forward(&h, &masks, mode, false)?.0;
            hs.push(h.clone());
        }
        let pooled = m.bert.pooler.forward(&h.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()?;
        Ok((m.classifier.forward(&pooled)?, hs))
    }

    fn real_only(t: &Tensor, mask: &Tensor) -> Tensor {
        t.broadcast_mul(&mask.unsqueeze(2).unwrap()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Padding-free execution gives real tokens the values and the weights the gradients of the
    /// fully padded computation, for every attention kind (each masks padded keys differently).
    #[test]
    fn packed_forward_and_gradients_equal_the_padded_computation() {
        let dev = Device::Cpu;
        for (act, sm) in [
            (HiddenAct::Gelu, SoftmaxAct::Softmax),
            (HiddenAct::Quad, SoftmaxAct::TwoQuad),
            (HiddenAct::Relu, SoftmaxAct::TwoRelu),
        ] {
            let mut cfg = BertConfig::tiny(2, 32, 4, 50);
            cfg.hidden_act = act;
            cfg.softmax_act = sm;
            // Training mode (the ops with a backward), dropout off so both runs see the same function.
            cfg.hidden_dropout_prob = 0.0;
            cfg.attention_probs_dropout_prob = 0.0;
            let md = ModelDir::random(cfg, 3, 7, &dev).unwrap();
            let mut rng = crate::model::rng::step_rng(1, 2, 3);
            // Lengths 7, 3 and 5 of 7; row 1 has a second segment.
            let mask = Tensor::new(&[[1f32, 1., 1., 1., 1., 1., 1.], [1., 1., 1., 0., 0., 0., 0.], [1., 1., 1., 1., 1., 0., 0.]], &dev).unwrap();
            let input = ModelInput {
                input_ids: Tensor::new(&[[2u32, 17, 9, 31, 4, 44, 3], [2, 8, 3, 0, 0, 0, 0], [2, 5, 12, 49, 3, 0, 0]], &dev).unwrap(),
                token_type_ids: Tensor::new(&[[0u32, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0]], &dev).unwrap(),
                attention_mask: mask.clone(),
            };
            let out = md.model.forward_with(&input, &mut Mode::Train(&mut rng), true).unwrap();
            let (logits, hs) = forward_padded(&md.model, &input, &mut Mode::Train(&mut rng)).unwrap();
            let what = format!("{act:?}+{sm:?}");
            assert!(max_diff(&out.logits, &logits) < 1e-5, "{what}: logits");
            for (j, (p, r)) in out.hidden_states.iter().zip(&hs).enumerate() {
                assert!(max_diff(&real_only(p, &mask), &real_only(r, &mask)) < 1e-5, "{what}: hidden state {j} at real tokens");
                if sm == SoftmaxAct::TwoRelu {
                    // Computed fully padded (pad values matter under 2ReLU): equal everywhere.
                    assert!(max_diff(p, r) < 1e-5, "{what}: hidden state {j} at padding");
                } else {
                    assert!(max_diff(p, &real_only(p, &mask)) == 0.0, "{what}: hidden state {j} is zero at padding");
                }
            }
            // Gradients of every weight through logits and the masked hidden states.
            let loss = |logits: &Tensor, hs: &[Tensor]| -> Tensor {
                let mut l = logits.sqr().unwrap().sum_all().unwrap();
                for h in hs {
                    l = (l + real_only(h, &mask).sqr().unwrap().sum_all().unwrap()).unwrap();
                }
                l
            };
            let g_packed = loss(&out.logits, &out.hidden_states).backward().unwrap();
            let g_padded = loss(&logits, &hs).backward().unwrap();
            for (name, var) in md.varmap.data().lock().unwrap().iter() {
                let (a, b) = (g_packed.get(var.as_tensor()), g_padded.get(var.as_tensor()));
                let (a, b) = (a.unwrap_or_else(|| panic!("{what}: {name} has no gradient (packed)")), b.unwrap());
                let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
                assert!(max_diff(a, b) / scale < 1e-4, "{what}: gradient of {name} differs by {}", max_diff(a, b));
            }
        }
    }
}
