//! Tokenisation and batching: `[CLS] A [SEP] (B [SEP])`, segment ids 0/1, longest-first
//! truncation (HF tokenizers' own algorithm), and **dynamic padding**: each batch is padded to
//! its longest member, not to the maximum length. On a 2-core CPU the padded token count is the
//! cost, so training batches are also length-bucketed (shuffled mega-batches sorted by length,
//! then the batch order shuffled), and evaluation batches are formed from length-sorted rows.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

use super::{Example, Label};
use crate::model::bert::ModelInput;
use crate::model::{ModelError, Result};

/// A tokenised example (no padding).
#[derive(Debug, Clone)]
pub struct Encoded {
    pub index: usize,
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub label: Option<Label>,
}

/// Tokenizer of a model directory with truncation fixed to `max_len`.
pub struct TextEncoder {
    tok: Tokenizer,
    pub path: PathBuf,
    pub max_len: usize,
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer { path: path.to_path_buf(), msg: e.to_string() }
}

impl TextEncoder {
    /// Load `tokenizer.json`, or build BERT's WordPiece pipeline from `vocab.txt`
    /// (lower-casing unless `tokenizer_config.json` says `do_lower_case: false`).
    /// Fails if the vocabulary does not fit the model's `vocab_size`.
    pub fn load(dir: &Path, max_len: usize, model_vocab_size: usize) -> Result<Self> {
        if max_len < 3 {
            return Err(tok_err(dir, format!("max sequence length {max_len} is too small (need ≥ 3)")));
        }
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let (mut tok, path) = if json.exists() {
            (Tokenizer::from_file(&json).map_err(|e| tok_err(&json, e))?, json)
        } else if vocab.exists() {
            (wordpiece_from_vocab(dir, &vocab)?, vocab)
        } else {
            return Err(tok_err(dir, "no tokenizer.json or vocab.txt"));
        };
        let n = tok.get_vocab_size(true);
        if n > model_vocab_size {
            return Err(tok_err(
                &path,
                format!("tokenizer has {n} tokens but the model's vocab_size is {model_vocab_size} (config/tokenizer mismatch)"),
            ));
        }
        for special in ["[CLS]", "[SEP]"] {
            if tok.token_to_id(special).is_none() {
                return Err(tok_err(&path, format!("no {special} token: not a BERT tokenizer")));
            }
        }
        tok.with_padding(None);
        tok.with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            ..Default::default()
        }))
        .map_err(|e| tok_err(&path, e))?;
        Ok(Self { tok, path, max_len })
    }

    /// Encode examples (in parallel), keeping their order.
    pub fn encode(&self, examples: &[Example]) -> Result<Vec<Encoded>> {
        use rayon::prelude::*;
        examples
            .par_iter()
            .map(|ex| {
                let enc = match &ex.text_b {
                    Some(b) => self.tok.encode((ex.text_a.as_str(), b.as_str()), true),
                    None => self.tok.encode(ex.text_a.as_str(), true),
                }
                .map_err(|e| tok_err(&self.path, format!("row {}: {e}", ex.index)))?;
                Ok(Encoded {
                    index: ex.index,
                    ids: enc.get_ids().to_vec(),
                    type_ids: enc.get_type_ids().to_vec(),
                    label: ex.label,
                })
            })
            .collect()
    }
}

impl TextEncoder {
    /// Word-piece ids of one word (normalised as the tokenizer does, e.g. lower-cased), without
    /// special tokens.
    pub fn pieces(&self, word: &str) -> Result<Vec<u32>> {
        let enc = self.tok.encode(word, false).map_err(|e| tok_err(&self.path, format!("word {word:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The vocabulary, token → id (special tokens included).
    pub fn vocab(&self) -> std::collections::HashMap<String, u32> {
        self.tok.get_vocab(true)
    }
}

fn wordpiece_from_vocab(dir: &Path, vocab: &Path) -> Result<Tokenizer> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;
    let lower = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
        .unwrap_or(true);
    let path_str = vocab.to_str().ok_or_else(|| tok_err(vocab, "path is not UTF-8"))?;
    let wp = WordPiece::from_file(path_str)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| tok_err(vocab, e))?;
    let mut tok = Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lower)))
        .map_err(|e| tok_err(vocab, e))?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    let sep = tok.token_to_id("[SEP]").ok_or_else(|| tok_err(vocab, "no [SEP] token"))?;
    let cls = tok.token_to_id("[CLS]").ok_or_else(|| tok_err(vocab, "no [CLS] token"))?;
    tok.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    Ok(tok)
}

/// A padded batch ready for the model.
pub struct Batch {
    pub input: ModelInput,
    /// Data-row indices of the batch members, in batch order.
    pub indices: Vec<usize>,
    /// Gold labels: u32 class ids [B] or f32 scores [B]; None if any member is unlabelled.
    pub labels: Option<Tensor>,
    /// Padded length L.
    pub seq_len: usize,
    /// Real (non-pad) tokens in the batch.
    pub tokens: usize,
}

/// Pad `items` to their longest member and stack them.
pub fn collate(items: &[&Encoded], device: &Device) -> Result<Batch> {
    let b = items.len();
    let l = items.iter().map(|e| e.ids.len()).max().unwrap_or(1).max(1);
    let mut ids = vec![0u32; b * l];
    let mut types = vec![0u32; b * l];
    let mut mask = vec![0f32; b * l];
    for (r, e) in items.iter().enumerate() {
        let row = r * l;
        ids[row..row + e.ids.len()].copy_from_slice(&e.ids);
        types[row..row + e.type_ids.len()].copy_from_slice(&e.type_ids);
        mask[row..row + e.ids.len()].iter_mut().for_each(|m| *m = 1.0);
    }
    let labels = match items.first().and_then(|e| e.label) {
        Some(Label::Class(_)) => items
            .iter()
            .map(|e| match e.label {
                Some(Label::Class(c)) => Some(c as u32),
                _ => None,
            })
            .collect::<Option<Vec<u32>>>()
            .map(|v| Tensor::from_vec(v, b, device))
            .transpose()?,
        Some(Label::Score(_)) => items
            .iter()
            .map(|e| match e.label {
                Some(Label::Score(s)) => Some(s),
                _ => None,
            })
            .collect::<Option<Vec<f32>>>()
            .map(|v| Tensor::from_vec(v, b, device))
            .transpose()?,
        None => None,
    };
    Ok(Batch {
        input: ModelInput {
            input_ids: Tensor::from_vec(ids, (b, l), device)?,
            token_type_ids: Tensor::from_vec(types, (b, l), device)?,
            attention_mask: Tensor::from_vec(mask, (b, l), device)?,
        },
        indices: items.iter().map(|e| e.index).collect(),
        labels,
        seq_len: l,
        tokens: items.iter().map(|e| e.ids.len()).sum(),
    })
}

/// Evaluation batches: positions into `data`, grouped from length-sorted rows (results are put
/// back in row order by the caller through `Batch::indices`).
pub fn eval_order(data: &[Encoded], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| (data[i].ids.len(), i));
    order.chunks(batch_size.max(1)).map(|c| c.to_vec()).collect()
}

/// Training batches for one epoch: a seeded shuffle, then within windows of 50 batches the rows
/// are sorted by length so each batch pads little, and finally the batch order is shuffled.
pub fn train_order(lengths: &[usize], batch_size: usize, rng: &mut rand::rngs::StdRng) -> Vec<Vec<usize>> {
    let bs = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in order.chunks(bs * 50) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| lengths[i]);
        batches.extend(w.chunks(bs).map(|c| c.to_vec()));
    }
    batches.shuffle(rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn enc(index: usize, n: usize) -> Encoded {
        Encoded { index, ids: (1..=n as u32).collect(), type_ids: vec![0; n], label: Some(Label::Class(index % 2)) }
    }

    #[test]
    fn collate_pads_to_longest_only() {
        let a = enc(0, 3);
        let b = enc(1, 5);
        let batch = collate(&[&a, &b], &Device::Cpu).unwrap();
        assert_eq!(batch.seq_len, 5);
        assert_eq!(batch.tokens, 8);
        let m: Vec<Vec<f32>> = batch.input.attention_mask.to_vec2().unwrap();
        assert_eq!(m[0], vec![1., 1., 1., 0., 0.]);
        let ids: Vec<Vec<u32>> = batch.input.input_ids.to_vec2().unwrap();
        assert_eq!(ids[0], vec![1, 2, 3, 0, 0]);
        assert_eq!(batch.labels.unwrap().to_vec1::<u32>().unwrap(), vec![0, 1]);
    }

    #[test]
    fn train_order_is_a_seeded_partition_with_little_padding() {
        let lengths: Vec<usize> = (0..1000).map(|i| 3 + (i * 7919) % 60).collect();
        let mut r1 = rand::rngs::StdRng::seed_from_u64(3);
        let b1 = train_order(&lengths, 32, &mut r1);
        let mut all: Vec<usize> = b1.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let mut r2 = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(b1, train_order(&lengths, 32, &mut r2));
        let padded: usize = b1.iter().map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap()).sum();
        let real: usize = lengths.iter().sum();
        assert!((padded as f64) < 1.1 * real as f64, "{padded} vs {real}");
    }
}
