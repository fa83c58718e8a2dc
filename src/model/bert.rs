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

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Embedding, Init, VarBuilder};

use super::approx::{HiddenAct, SoftmaxAct, MASK_VALUE};
use super::config::BertConfig;
use super::norm::LayerNorm;
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
    /// L+1 tensors [B, L, H]: embedding output, then each layer's output.
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

    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (_b, l) = input_ids.dims2()?;
        let pos = Tensor::arange(0u32, l as u32, input_ids.device())?;
        let words = candle_core::Module::forward(&self.word_embeddings, input_ids)?;
        let types = candle_core::Module::forward(&self.token_type_embeddings, token_type_ids)?;
        let pos = candle_core::Module::forward(&self.position_embeddings, &pos)?;
        let e = (words + types)?.broadcast_add(&pos)?;
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

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        x.reshape((b, l, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    /// Returns the context [B, L, H] and, if asked, the masked pre-normalisation scores [B, h, L, L].
    pub fn forward(
        &self,
        x: &Tensor,
        masks: &Masks,
        mode: &mut Mode,
        with_scores: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, l, h) = x.dims3()?;
        let q = self.split_heads(&self.query.forward(x)?)?;
        let k = self.split_heads(&self.key.forward(x)?)?;
        let v = self.split_heads(&self.value.forward(x)?)?;
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
        let ctx = super::bmm::bmm(&probs, &v)?.transpose(1, 2)?.reshape((b, l, h))?;
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

    pub fn forward(
        &self,
        x: &Tensor,
        masks: &Masks,
        mode: &mut Mode,
        with_scores: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (ctx, scores) = self.self_attention.forward(x, masks, mode, with_scores)?;
        let a = self.attention_output.forward(&ctx, x, mode)?;
        let i = self.act.forward(&self.intermediate.forward(&a)?)?;
        let o = self.output.forward(&i, &a, mode)?;
        Ok((o, scores))
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

    /// Forward without collecting attention scores.
    pub fn forward(&self, input: &ModelInput, mode: &mut Mode) -> Result<ModelOutput> {
        self.forward_with(input, mode, false)
    }

    /// Forward; `with_scores` also returns every layer's pre-normalisation attention scores.
    pub fn forward_with(&self, input: &ModelInput, mode: &mut Mode, with_scores: bool) -> Result<ModelOutput> {
        let masks = Masks::new(&input.attention_mask, DType::F32)?;
        let mut h = self.bert.embeddings.forward(&input.input_ids, &input.token_type_ids, mode)?;
        let mut hidden_states = Vec::with_capacity(self.bert.layers.len() + 1);
        let mut attention_scores = Vec::new();
        hidden_states.push(h.clone());
        for layer in &self.bert.layers {
            let (o, s) = layer.forward(&h, &masks, mode, with_scores)?;
            attention_scores.extend(s);
            hidden_states.push(o.clone());
            h = o;
        }
        let cls = h.narrow(1, 0, 1)?.squeeze(1)?;
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
