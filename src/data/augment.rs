//! Transfer-set augmentation for distillation (`kd augment`): word-substitution variants of a
//! task's training rows, to be labelled by the teacher rather than by the gold labels.
//!
//! MPCFormer distills on the task's training set only; its code carries TinyBERT's augmented
//! `train_aug.tsv` option but never passes it (spec §2.4). TinyBERT (Jiao et al., 2020, §3.3)
//! shows that on small tasks the student learns much more of the teacher's function from word
//! substitutions of the training sentences: each variant replaces each word with probability
//! `p` by one of its `K` most similar words, and the teacher's outputs on the variant are the
//! targets. TinyBERT draws the replacements of a single-piece word from BERT's masked-LM
//! predictions and those of other words from GloVe neighbours. A fine-tuned task model or a
//! sentence encoder has no masked-LM head and no GloVe table comes with it, so here every word
//! uses the nearest whole-word tokens of the model's own input-embedding table, by cosine
//! similarity (a word of several pieces by the mean of its pieces' rows) — the same kind of
//! context-free neighbour TinyBERT takes from GloVe.
//!
//! What is replaced: a whitespace-separated word's core (the span between its leading and
//! trailing punctuation) when that core is ASCII letters only; punctuation stays, and so do
//! numbers, contractions and hyphenated words. Candidates are ASCII-letter vocabulary tokens
//! that are not continuation pieces (`##…`), special tokens or single letters other than
//! "a"/"i". The replacement takes the word's capitalisation (first letter or all capitals).
//!
//! The variants keep the source row's other columns, label included; that label is **not** a
//! gold label of the variant (a substitution can make a CoLA sentence unacceptable or flip an
//! SST-2 sentiment). The file is for distillation only, and `kd train` refuses it for the
//! objectives that read labels.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::batch::TextEncoder;
use super::{glue, DataError, Example, Task};
use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{0}")]
    Options(String),
}

/// How many variants, and how far each strays from its source.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AugmentOptions {
    /// Distinct variants wanted per source row (fewer when a row has too few replaceable words).
    pub per_example: usize,
    /// Probability that a replaceable word is replaced (TinyBERT: 0.4).
    pub replace_prob: f64,
    /// Neighbours a replacement is drawn from, uniformly (TinyBERT: 15).
    pub neighbours: usize,
    pub seed: u64,
}

impl AugmentOptions {
    pub fn check(&self) -> Result<(), AugmentError> {
        if self.per_example == 0 {
            return Err(AugmentError::Options("--per-example must be ≥ 1".into()));
        }
        if !(self.replace_prob > 0.0 && self.replace_prob <= 1.0) {
            return Err(AugmentError::Options(format!("--replace-prob must be in (0, 1] (got {})", self.replace_prob)));
        }
        if self.neighbours == 0 {
            return Err(AugmentError::Options("--neighbours must be ≥ 1".into()));
        }
        Ok(())
    }
}

/// What an augmentation produced.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AugmentStats {
    pub source_rows: usize,
    pub variants: usize,
    /// Rows that got fewer than `per_example` distinct variants.
    pub short_rows: usize,
    pub words: usize,
    pub replaceable_words: usize,
    pub distinct_replaceable: usize,
}

/// Split a word into (leading punctuation, core, trailing punctuation); the core runs from the
/// first to the last ASCII alphanumeric character and is empty when there is none.
pub fn split_word(w: &str) -> (&str, &str, &str) {
    let Some(start) = w.find(|c: char| c.is_ascii_alphanumeric()) else {
        return (w, "", "");
    };
    let end = w.rfind(|c: char| c.is_ascii_alphanumeric()).map_or(w.len(), |i| i + 1);
    (&w[..start], &w[start..end], &w[end..])
}

/// Whether a word core may be replaced.
pub fn replaceable(core: &str) -> bool {
    !core.is_empty() && core.bytes().all(|b| b.is_ascii_alphabetic())
}

fn candidate_token(t: &str) -> bool {
    (t.len() >= 2 || t == "a" || t == "i") && t.bytes().all(|b| b.is_ascii_alphabetic())
}

/// `like`'s capitalisation applied to `word` (all capitals, or a capital first letter).
fn match_case(word: &str, like: &str) -> String {
    if like.len() > 1 && like.bytes().all(|b| b.is_ascii_uppercase()) {
        word.to_ascii_uppercase()
    } else if like.starts_with(|c: char| c.is_ascii_uppercase()) {
        let mut s = word.to_string();
        s[..1].make_ascii_uppercase();
        s
    } else {
        word.to_string()
    }
}

/// The `K` nearest candidate tokens of each distinct replaceable word, by cosine similarity of
/// input-embedding rows.
pub struct Neighbours {
    candidates: Vec<String>,
    /// Lower-cased core → indices into `candidates`, most similar first.
    of: HashMap<String, Vec<u32>>,
}

impl Neighbours {
    /// Neighbours of every distinct replaceable core among `words` (compared lower-cased).
    pub fn build<'a>(model_dir: &Path, words: impl IntoIterator<Item = &'a str>, k: usize) -> Result<Self, AugmentError> {
        let weights = model_dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&weights, &Device::Cpu).map_err(|e| AugmentError::Invalid {
            path: weights.clone(),
            msg: e.to_string(),
        })?;
        let table = tensors
            .iter()
            .find(|(n, _)| n.ends_with("embeddings.word_embeddings.weight"))
            .map(|(_, t)| t.to_dtype(DType::F32))
            .transpose()
            .map_err(ModelError::from)?
            .ok_or_else(|| AugmentError::Invalid {
                path: weights.clone(),
                msg: "no embeddings.word_embeddings.weight tensor".into(),
            })?;
        let (vocab_rows, _) = table.dims2().map_err(ModelError::from)?;
        let enc = TextEncoder::load(model_dir, 512, vocab_rows)?;

        let mut vocab: Vec<(String, u32)> = enc.vocab().into_iter().filter(|(t, _)| candidate_token(t)).collect();
        vocab.sort_by_key(|&(_, id)| id);
        if vocab.len() <= k {
            return Err(AugmentError::Invalid {
                path: enc.path.clone(),
                msg: format!("only {} whole-word ASCII tokens, need more than {k} neighbours", vocab.len()),
            });
        }
        let cand_ids = Tensor::new(vocab.iter().map(|&(_, id)| id).collect::<Vec<u32>>(), &Device::Cpu).map_err(ModelError::from)?;
        let cand = unit_rows(&table.index_select(&cand_ids, 0).map_err(ModelError::from)?)?;
        let cand_t = cand.t().map_err(ModelError::from)?.contiguous().map_err(ModelError::from)?;

        let mut distinct: Vec<String> = words
            .into_iter()
            .map(|w| split_word(w).1)
            .filter(|c| replaceable(c))
            .map(|c| c.to_ascii_lowercase())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        distinct.sort();
        let mut queries = Vec::with_capacity(distinct.len());
        for w in &distinct {
            let ids = enc.pieces(w)?;
            if ids.is_empty() {
                return Err(AugmentError::Invalid { path: enc.path.clone(), msg: format!("word {w:?} tokenises to nothing") });
            }
            let ids = Tensor::new(ids, &Device::Cpu).map_err(ModelError::from)?;
            queries.push(table.index_select(&ids, 0).and_then(|t| t.mean(0)).map_err(ModelError::from)?);
        }
        let mut of = HashMap::with_capacity(distinct.len());
        const CHUNK: usize = 256;
        for (c, chunk) in distinct.chunks(CHUNK).enumerate() {
            let q = unit_rows(&Tensor::stack(&queries[c * CHUNK..c * CHUNK + chunk.len()], 0).map_err(ModelError::from)?)?;
            let sims: Vec<Vec<f32>> = q.matmul(&cand_t).and_then(|s| s.to_vec2()).map_err(ModelError::from)?;
            for (w, row) in chunk.iter().zip(sims) {
                let mut order: Vec<u32> =
                    (0..vocab.len() as u32).filter(|&i| !vocab[i as usize].0.eq_ignore_ascii_case(w)).collect();
                // Most similar first; ties by token id, so the result never depends on sort stability.
                order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
                order.truncate(k);
                of.insert(w.clone(), order);
            }
        }
        Ok(Self { candidates: vocab.into_iter().map(|(t, _)| t).collect(), of })
    }

    /// The neighbours of a core (any case), most similar first; `None` for a word not seen by
    /// [`Neighbours::build`] or not replaceable.
    pub fn of(&self, core: &str) -> Option<Vec<&str>> {
        self.of
            .get(&core.to_ascii_lowercase())
            .map(|v| v.iter().map(|&i| self.candidates[i as usize].as_str()).collect())
    }

    /// Distinct words with neighbours.
    pub fn len(&self) -> usize {
        self.of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.of.is_empty()
    }

    /// Up to `opts.per_example` distinct variants of `text`, none equal to it (words rejoined with
    /// single spaces). Deterministic in `rng`.
    pub fn variants(&self, text: &str, opts: &AugmentOptions, rng: &mut rand::rngs::StdRng) -> Vec<String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        // Per word: (leading punctuation, core, trailing punctuation, neighbours) if replaceable.
        type Slot<'w, 'n> = Option<(&'w str, &'w str, &'w str, Vec<&'n str>)>;
        let slots: Vec<Slot> = words
            .iter()
            .map(|w| {
                let (pre, core, post) = split_word(w);
                if !replaceable(core) {
                    return None;
                }
                self.of(core).map(|n| (pre, core, post, n))
            })
            .collect();
        let original = words.join(" ");
        let mut seen: HashSet<String> = HashSet::from([original.clone()]);
        let mut out = Vec::new();
        if slots.iter().all(Option::is_none) {
            return out;
        }
        // A row with few replaceable words has few distinct variants; stop after a bounded
        // number of draws rather than loop on it.
        for _ in 0..opts.per_example * 10 {
            if out.len() == opts.per_example {
                break;
            }
            let v: Vec<String> = words
                .iter()
                .zip(&slots)
                .map(|(w, slot)| match slot {
                    Some((pre, core, post, n)) if rng.random_bool(opts.replace_prob) => {
                        let pick = n[rng.random_range(0..n.len())];
                        format!("{pre}{}{post}", match_case(pick, core))
                    }
                    _ => w.to_string(),
                })
                .collect();
            let v = v.join(" ");
            if seen.insert(v.clone()) {
                out.push(v);
            }
        }
        out
    }
}

fn unit_rows(t: &Tensor) -> Result<Tensor, ModelError> {
    let norm = t.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    Ok(t.broadcast_div(&norm)?)
}

/// Row `index`'s own generator, so rows can be processed in parallel and reproducibly.
fn row_rng(seed: u64, index: usize) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Variants of one example: `text_a` and `text_b` (pair tasks) varied independently, paired
/// in draw order; a pair gets as many variants as its more variable side (the other side then
/// repeats its source text).
fn example_variants(nb: &Neighbours, ex: &Example, opts: &AugmentOptions) -> Vec<glue::RowTexts> {
    let mut rng = row_rng(opts.seed, ex.index);
    let a = nb.variants(&ex.text_a, opts, &mut rng);
    match &ex.text_b {
        None => a.into_iter().map(|a| (a, None)).collect(),
        Some(b_text) => {
            let b = nb.variants(b_text, opts, &mut rng);
            let n = a.len().max(b.len());
            (0..n)
                .map(|i| {
                    let a = a.get(i).cloned().unwrap_or_else(|| ex.text_a.clone());
                    let b = b.get(i).cloned().unwrap_or_else(|| b_text.clone());
                    (a, Some(b))
                })
                .collect()
        }
    }
}

/// Write `out`: the task's `split` file of `data_dir` with each row followed by its variants,
/// in the same format (so `kd train` reads it like the original). Atomic (temp file + rename).
pub fn augment_file(
    task: Task,
    data_dir: &Path,
    split: &str,
    model_dir: &Path,
    out: &Path,
    opts: &AugmentOptions,
) -> Result<AugmentStats, AugmentError> {
    opts.check()?;
    if task == Task::Imdb {
        return Err(AugmentError::Options("imdb: augmentation works on GLUE TSV tasks (IMDb's 25k reviews need none)".into()));
    }
    let src = data_dir.join(glue::split_file_name(task, split));
    let rows = glue::load(task, data_dir, split, None)?;
    if rows.iter().any(|r| r.label.is_none()) {
        return Err(AugmentError::Invalid { path: src, msg: "unlabeled split: augment a train or dev file".into() });
    }
    let texts = rows.iter().flat_map(|r| std::iter::once(r.text_a.as_str()).chain(r.text_b.as_deref()));
    let words: Vec<&str> = texts.flat_map(str::split_whitespace).collect();
    let nb = Neighbours::build(model_dir, words.iter().copied(), opts.neighbours)?;
    let variants: Vec<Vec<glue::RowTexts>> = rows.par_iter().map(|ex| example_variants(&nb, ex, opts)).collect();

    let mut stats = AugmentStats {
        source_rows: rows.len(),
        words: words.len(),
        replaceable_words: words.iter().filter(|w| replaceable(split_word(w).1)).count(),
        distinct_replaceable: nb.len(),
        ..Default::default()
    };
    stats.variants = variants.iter().map(Vec::len).sum();
    stats.short_rows = variants.iter().filter(|v| v.len() < opts.per_example).count();
    let mut bytes = Vec::new();
    glue::expand_rows(task, &src, variants, &mut bytes)?;
    crate::model::checkpoint::write_file_atomic(out, &bytes)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_word_keeps_punctuation_outside_the_core() {
        assert_eq!(split_word("fine."), ("", "fine", "."));
        assert_eq!(split_word("\"Hello,"), ("\"", "Hello", ","));
        assert_eq!(split_word("don't"), ("", "don't", ""));
        assert_eq!(split_word("..."), ("...", "", ""));
        assert!(!replaceable("don't") && !replaceable("3") && !replaceable("") && replaceable("Fine"));
    }

    #[test]
    fn case_follows_the_replaced_word() {
        assert_eq!(match_case("dog", "Cat"), "Dog");
        assert_eq!(match_case("dog", "CAT"), "DOG");
        assert_eq!(match_case("dog", "cat"), "dog");
        assert_eq!(match_case("a", "I"), "A");
    }

    #[test]
    fn options_are_checked() {
        let ok = AugmentOptions { per_example: 2, replace_prob: 0.4, neighbours: 5, seed: 1 };
        assert!(ok.check().is_ok());
        assert!(AugmentOptions { replace_prob: 0.0, ..ok }.check().is_err());
        assert!(AugmentOptions { replace_prob: 1.5, ..ok }.check().is_err());
        assert!(AugmentOptions { per_example: 0, ..ok }.check().is_err());
        assert!(AugmentOptions { neighbours: 0, ..ok }.check().is_err());
    }
}
