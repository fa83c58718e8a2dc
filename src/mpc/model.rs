//! The whole private BertForSequenceClassification, mirroring `model/bert.rs`: embeddings
//! (word + position + token type, LayerNorm), the encoder layers of `mpc::bert`, the pooler
//! tanh(dense(h[0])) and the classifier, with the logits revealed to the client only.
//!
//! Roles (threat model in `mpc/mod.rs`): the model owner secret-shares the weights once; the
//! client (data owner) holds the token ids; P0 and P1 compute; the dealer only supplies
//! correlated randomness.
//!
//! **Word embeddings without a secret one-hot product.** The client builds the one-hot X [T, V]
//! locally. For every inference each party draws a fresh seed kᵢ from its preprocessing stream
//! (the dealer replicates it) and gives it to the client; Aᵢ = PRG(kᵢ), A = A₀ + A₁. The client
//! sends X − A to both parties; the table E [V, H] is in weight-mask form (E − B public to the
//! parties since model load, B shared by the dealer), and the dealer shares C = A·B. Then
//!   X·E = (X − A)(E − B) + (X − A)·[B] + [A]·(E − B) + [C]
//! is local to each party (`protocol::embed_product`). Cost per inference: no party-to-party
//! rounds or bytes; a client upload of T·V ring words to each party (one flight, metered as
//! `client_bytes` of the `embedding` class) and 16 bytes of seed from each party; dealer work one
//! T×V×H product and T·H words to P1; party work two T×V×H products, one of which ([A]·(E − B),
//! input-independent) is preprocessing, so online it is one T×V×H product per party.
//! Security: A is uniform and unknown to each party alone (it needs both seeds), so X − A is a
//! one-time pad of X; the parties' views are the same as for a Beaver product. The client sees
//! only the seeds (independent of everything else in the streams) and never B or E; the dealer
//! never sees X. Position rows (0..T) and token-type rows are public-index gathers of the shared
//! tables: the sequence length and the segment boundary are public metadata, as the schedule is.

use std::collections::HashMap;

use super::approx::tanh;
use super::bert::{add_bias, get, linear, PrivateLayer, PrivateLinear, PrivateModelError};
use super::channel::{from_bytes, to_bytes, Channel};
use super::dealer::{embed_mask, Request};
use super::fixed::decode;
use super::norm::layer_norm;
use super::party::{LayerClass, Party, Share};
use super::protocol::{embed_offline, embed_product, matmul_weights, prepare_vector, prepare_weight, VecShare, WeightShare};
use super::ring::RingTensor;
use crate::model::BertConfig;

/// Weight-mask ids outside the per-layer range (layer i uses 16·i + k).
const WORD_ID: u64 = 1 << 40;
const POOLER_ID: u64 = WORD_ID + 1;
const CLASSIFIER_ID: u64 = WORD_ID + 2;
const EMB_LN_ID: u64 = WORD_ID + 3;

/// One party's prepared model.
pub struct PrivateBert {
    word: WeightShare,
    position: Share,
    token_type: Share,
    emb_ln: (VecShare, Share),
    layers: Vec<PrivateLayer>,
    pooler: PrivateLinear,
    classifier: PrivateLinear,
    eps: f64,
    vocab: usize,
    hidden: usize,
    max_positions: usize,
    type_vocab: usize,
    pub num_labels: usize,
}

/// The intermediate shares of one forward pass (for layer-by-layer tests): the embedding
/// output, each layer's output and the pooled vector (the logits are `forward`'s result).
#[derive(Default)]
pub struct Trace {
    pub hidden_states: Vec<Share>,
    pub pooled: Option<Share>,
}

impl PrivateBert {
    /// Prepare every weight (opens each W − B once; the word table's mask is registered).
    pub fn prepare(
        p: &mut Party,
        shares: &HashMap<String, RingTensor>,
        cfg: &BertConfig,
        frac: u32,
    ) -> Result<Self, PrivateModelError> {
        p.set_class(LayerClass::Other);
        let word = get(shares, "bert.embeddings.word_embeddings.weight", frac)?;
        let word = prepare_weight(p, &word, WORD_ID)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| PrivateLayer::prepare(p, shares, cfg, i, frac))
            .collect::<Result<Vec<_>, _>>()?;
        let pooler = linear(p, shares, "bert.pooler.dense", POOLER_ID, frac)?;
        let classifier = linear(p, shares, "classifier", CLASSIFIER_ID, frac)?;
        let num_labels = classifier.b.ring.len();
        Ok(Self {
            word,
            position: get(shares, "bert.embeddings.position_embeddings.weight", frac)?,
            token_type: get(shares, "bert.embeddings.token_type_embeddings.weight", frac)?,
            emb_ln: (
                prepare_vector(p, &get(shares, "bert.embeddings.LayerNorm.weight", frac)?, EMB_LN_ID)?,
                get(shares, "bert.embeddings.LayerNorm.bias", frac)?,
            ),
            layers,
            pooler,
            classifier,
            eps: cfg.layer_norm_eps,
            vocab: cfg.vocab_size,
            hidden: cfg.hidden_size,
            max_positions: cfg.max_position_embeddings,
            type_vocab: cfg.type_vocab_size,
            num_labels,
        })
    }

    /// The parties' side of one inference. The sequence length and `type_ids` are public; the
    /// token ids stay with the client. Returns this party's share of the logits (which it has
    /// also sent to the client).
    pub fn forward(
        &self,
        p: &mut Party,
        type_ids: &[u32],
        mut trace: Option<&mut Trace>,
    ) -> Result<Share, PrivateModelError> {
        let m = type_ids.len();
        if m > self.max_positions {
            return Err(PrivateModelError::TooLong { what: "sequence length", got: m, max: self.max_positions });
        }
        if let Some(&t) = type_ids.iter().find(|&&t| t as usize >= self.type_vocab) {
            return Err(PrivateModelError::TooLong { what: "token type id", got: t as usize, max: self.type_vocab - 1 });
        }
        p.set_class(LayerClass::Embedding);
        // The seed first: the client can build X − A while the dealer computes A·B.
        let seed = p.preprocessing(Request::EmbedSeed)?.b;
        p.client_send(&seed.data, false)?;
        let mat = p.preprocessing(Request::EmbedMask { id: self.word.id(), m })?;
        let t = std::time::Instant::now();
        let a = embed_mask(&seed.data, m, self.vocab);
        p.add_offline_seconds(t.elapsed().as_secs_f64());
        let pre = embed_offline(p, &self.word, &a, &mat.c);
        drop(a);
        let xa = RingTensor::new(&[m, self.vocab], p.client_recv(m * self.vocab)?);
        let words = embed_product(&self.word, &xa, &pre);
        let h = self.hidden;
        let mut e = words.ring.data;
        for (r, &t) in type_ids.iter().enumerate() {
            let pos = &self.position.ring.data[r * h..(r + 1) * h];
            let typ = &self.token_type.ring.data[t as usize * h..(t as usize + 1) * h];
            for j in 0..h {
                e[r * h + j] = e[r * h + j].wrapping_add(pos[j]).wrapping_add(typ[j]);
            }
        }
        let e = Share { ring: RingTensor::new(&[m, h], e), frac: words.frac };
        let mut x = layer_norm(p, &e, &self.emb_ln.0, &self.emb_ln.1, self.eps, e.frac)?;
        if let Some(t) = trace.as_deref_mut() {
            t.hidden_states.push(x.clone());
        }
        for layer in &self.layers {
            x = layer.forward(p, &x)?;
            if let Some(t) = trace.as_deref_mut() {
                t.hidden_states.push(x.clone());
            }
        }
        p.set_class(LayerClass::Pooler);
        let cls = Share { ring: RingTensor::new(&[1, h], x.ring.data[..h].to_vec()), frac: x.frac };
        let pre = add_bias(matmul_weights(p, &cls, &[&self.pooler.w])?.remove(0), &self.pooler.b);
        let pooled = tanh(p, &pre)?;
        if let Some(t) = trace.as_deref_mut() {
            t.pooled = Some(pooled.clone());
        }
        p.set_class(LayerClass::Classifier);
        let logits = add_bias(matmul_weights(p, &pooled, &[&self.classifier.w])?.remove(0), &self.classifier.b);
        p.client_send(&logits.ring.data, true)?;
        p.set_class(LayerClass::Other);
        Ok(logits)
    }
}

/// The client's side of one inference: hand out X − A for `ids`, then reconstruct the logits.
pub fn client_infer(
    links: &mut [Box<dyn Channel>; 2],
    ids: &[u32],
    vocab: usize,
    num_labels: usize,
    frac: u32,
) -> Result<Vec<f64>, PrivateModelError> {
    let m = ids.len();
    for (pos, &id) in ids.iter().enumerate() {
        if id as usize >= vocab {
            return Err(PrivateModelError::TokenOutOfRange { id, pos, vocab });
        }
    }
    let k0 = from_bytes(&links[0].recv()?, 2)?;
    let k1 = from_bytes(&links[1].recv()?, 2)?;
    let a = embed_mask(&k0, m, vocab).add(&embed_mask(&k1, m, vocab));
    // X − A with X one-hot: negate A, add 1 at each token's column.
    let mut xa = a.neg();
    for (r, &id) in ids.iter().enumerate() {
        let j = r * vocab + id as usize;
        xa.data[j] = xa.data[j].wrapping_add(1);
    }
    let msg = to_bytes(&xa.data);
    links[0].send(msg.clone())?;
    links[1].send(msg)?;
    let l0 = from_bytes(&links[0].recv()?, num_labels)?;
    let l1 = from_bytes(&links[1].recv()?, num_labels)?;
    Ok(l0.iter().zip(&l1).map(|(a, b)| decode(a.wrapping_add(*b), frac)).collect())
}

/// The client's whole session: one inference per row, in order.
pub fn client_session(
    mut links: [Box<dyn Channel>; 2],
    rows: &[Vec<u32>],
    vocab: usize,
    num_labels: usize,
    frac: u32,
) -> Result<Vec<Vec<f64>>, PrivateModelError> {
    rows.iter().map(|ids| client_infer(&mut links, ids, vocab, num_labels, frac)).collect()
}
