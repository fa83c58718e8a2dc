//! The deterministic teacher's stage-1 targets, computed once and reused every epoch.
//!
//! Stage 1 (spec §2.2) compares the student's hidden states and attention scores with the
//! teacher's on the same batch. A teacher without dropout gives every example the same targets
//! in every epoch, so its forward pass — about a fifth of a stage-1 step — need not be repeated:
//! one pass over the training set (length-sorted batches, as evaluation) stores, per example,
//! the mapped teacher layers at its real tokens only, [len, H] hidden states and
//! [heads, len, len] scores. A step then scatters its examples back into the batch's padded
//! [B, L, H] and [B, heads, L, L] tensors with zeros elsewhere. The stage-1 loss multiplies both
//! sides by the real-token and real-pair masks before comparing (`layerwise_loss`), so what a
//! padded slot holds never matters; real entries equal a per-step teacher forward up to float
//! summation order (the tests bound the difference).
//!
//! Memory is 4 bytes per stored value, Σ (n_hidden·len·H + n_att·heads·len²) over the training
//! set; above the caller's budget the cache is not built and the teacher runs per step as before.

use candle_core::{DType, Device, Tensor};

use crate::data::batch::{collate, Encoded};
use crate::model::bert::ModelOutput;
use crate::model::{BertForSequenceClassification, Mode};
use crate::train::student::LayerMap;

/// Per-example teacher targets for the layers the student is mapped to.
pub struct TeacherCache {
    /// Teacher hidden-state indices stored (the student's j·k), in order.
    hidden_idx: Vec<usize>,
    /// Teacher attention-layer indices stored (the student's i·k + k − 1), in order.
    att_idx: Vec<usize>,
    teacher_hidden_states: usize,
    teacher_layers: usize,
    hidden: usize,
    heads: usize,
    /// [example][stored hidden index] → len·H values.
    hid: Vec<Vec<Vec<f32>>>,
    /// [example][stored attention index] → heads·len·len values.
    att: Vec<Vec<Vec<f32>>>,
}

impl TeacherCache {
    /// Bytes the cache would take for these rows.
    pub fn estimate_bytes(rows: &[Encoded], map: &LayerMap, hidden: usize, heads: usize) -> u64 {
        let (nh, na) = ((map.student_layers + 1) as u64, map.student_layers as u64);
        rows.iter()
            .map(|e| {
                let l = e.ids.len() as u64;
                4 * (nh * l * hidden as u64 + na * heads as u64 * l * l)
            })
            .sum()
    }

    /// One eval-mode teacher pass over `rows` in length-sorted batches of `batch_size`.
    pub fn build(
        teacher: &BertForSequenceClassification,
        rows: &[Encoded],
        map: &LayerMap,
        batch_size: usize,
        device: &Device,
    ) -> crate::model::Result<Self> {
        let hidden_idx: Vec<usize> = (0..=map.student_layers).map(|j| map.hidden(j)).collect();
        let att_idx: Vec<usize> = (0..map.student_layers).map(|i| map.attention(i)).collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].ids.len());
        let mut hid = vec![Vec::new(); rows.len()];
        let mut att = vec![Vec::new(); rows.len()];
        let (mut hidden, mut heads) = (0, 0);
        for chunk in order.chunks(batch_size.max(1)) {
            let items: Vec<&Encoded> = chunk.iter().map(|&i| &rows[i]).collect();
            let batch = collate(&items, device)?;
            let out = teacher.forward_with(&batch.input, &mut Mode::Eval, true)?;
            let (_, l, h) = out.hidden_states[0].dims3()?;
            let nh = out.attention_scores[0].dims4()?.1;
            (hidden, heads) = (h, nh);
            let hs: Vec<Vec<f32>> =
                hidden_idx.iter().map(|&k| out.hidden_states[k].flatten_all()?.to_vec1()).collect::<candle_core::Result<_>>()?;
            let sc: Vec<Vec<f32>> =
                att_idx.iter().map(|&k| out.attention_scores[k].flatten_all()?.to_vec1()).collect::<candle_core::Result<_>>()?;
            for (b, &i) in chunk.iter().enumerate() {
                let len = rows[i].ids.len();
                hid[i] = hs.iter().map(|v| v[b * l * h..b * l * h + len * h].to_vec()).collect();
                att[i] = sc
                    .iter()
                    .map(|v| {
                        let mut o = Vec::with_capacity(nh * len * len);
                        for head in 0..nh {
                            for q in 0..len {
                                let r = ((b * nh + head) * l + q) * l;
                                o.extend_from_slice(&v[r..r + len]);
                            }
                        }
                        o
                    })
                    .collect();
            }
        }
        Ok(Self {
            hidden_idx,
            att_idx,
            teacher_hidden_states: map.teacher_layers + 1,
            teacher_layers: map.teacher_layers,
            hidden,
            heads,
            hid,
            att,
        })
    }

    /// The teacher's stage-1 output for the examples at `positions` (indices into the rows the
    /// cache was built from), padded to length `l`. Layers the student is not mapped to are empty
    /// placeholders; logits and pooler output are zeros (stage 1 does not read them).
    pub fn batch(&self, positions: &[usize], l: usize, num_labels: usize, device: &Device) -> candle_core::Result<ModelOutput> {
        let (b, h, nh) = (positions.len(), self.hidden, self.heads);
        let empty = || Tensor::zeros(0, DType::F32, device);
        let mut hidden_states = (0..self.teacher_hidden_states).map(|_| empty()).collect::<candle_core::Result<Vec<_>>>()?;
        for (s, &k) in self.hidden_idx.iter().enumerate() {
            let mut v = vec![0f32; b * l * h];
            for (r, &p) in positions.iter().enumerate() {
                let src = &self.hid[p][s];
                v[r * l * h..r * l * h + src.len()].copy_from_slice(src);
            }
            hidden_states[k] = Tensor::from_vec(v, (b, l, h), device)?;
        }
        let mut attention_scores = (0..self.teacher_layers).map(|_| empty()).collect::<candle_core::Result<Vec<_>>>()?;
        for (s, &k) in self.att_idx.iter().enumerate() {
            let mut v = vec![0f32; b * nh * l * l];
            for (r, &p) in positions.iter().enumerate() {
                let src = &self.att[p][s];
                let len = self.hid[p][0].len() / h;
                for head in 0..nh {
                    for q in 0..len {
                        let dst = ((r * nh + head) * l + q) * l;
                        let from = (head * len + q) * len;
                        v[dst..dst + len].copy_from_slice(&src[from..from + len]);
                    }
                }
            }
            attention_scores[k] = Tensor::from_vec(v, (b, nh, l, l), device)?;
        }
        let logits = Tensor::zeros((b, num_labels), DType::F32, device)?;
        Ok(ModelOutput { pooled: logits.clone(), logits, hidden_states, attention_scores })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::batch::collate;
    use crate::model::{BertConfig, ModelDir};
    use crate::train::distill::{layerwise_loss, PadMasks};

    fn rows(lens: &[usize], vocab: u32) -> Vec<Encoded> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| Encoded {
                index: i,
                ids: (0..n).map(|t| if t == 0 { 1 } else { 2 + ((i * 7 + t * 13) as u32 % (vocab - 2)) }).collect(),
                type_ids: (0..n).map(|t| u32::from(t > n / 2)).collect(),
                label: None,
            })
            .collect()
    }

    /// The cached targets of a batch (built from differently composed, length-sorted batches)
    /// equal a per-step teacher forward on that batch at every real entry, give the same
    /// stage-1 loss, and the size estimate is what was stored — for an equal-depth and a
    /// half-depth layer map.
    #[test]
    fn cached_targets_match_a_per_step_teacher_forward() {
        let dev = Device::Cpu;
        let mut cfg = BertConfig::tiny(4, 16, 2, 40);
        cfg.set_labels(&["a".into(), "b".into()], false);
        let teacher = ModelDir::random(cfg.clone(), 2, 3, &dev).unwrap();
        let data = rows(&[9, 3, 14, 6, 11, 5, 14, 2], cfg.vocab_size as u32);
        for student_layers in [cfg.num_hidden_layers, cfg.num_hidden_layers / 2] {
            let map = LayerMap::new(cfg.num_hidden_layers, student_layers).unwrap();
            let cache = TeacherCache::build(&teacher.model, &data, &map, 3, &dev).unwrap();
            let stored: usize = cache.hid.iter().chain(&cache.att).flatten().map(Vec::len).sum();
            assert_eq!(TeacherCache::estimate_bytes(&data, &map, cfg.hidden_size, cfg.num_attention_heads), 4 * stored as u64);
            for positions in [vec![0usize, 4, 2], vec![7, 1], vec![5, 6, 3, 0]] {
                let items: Vec<&Encoded> = positions.iter().map(|&p| &data[p]).collect();
                let batch = collate(&items, &dev).unwrap();
                let l = batch.input.attention_mask.dims2().unwrap().1;
                let direct = teacher.model.forward_with(&batch.input, &mut Mode::Eval, true).unwrap();
                let cached = cache.batch(&positions, l, teacher.model.num_labels, &dev).unwrap();
                let masks = PadMasks::new(&batch.input.attention_mask).unwrap();
                // Largest difference at real entries (both sides masked).
                let masked_diff = |a: &Tensor, b: &Tensor, m: &Tensor| -> f32 {
                    let d = (a.broadcast_mul(m).unwrap() - b.broadcast_mul(m).unwrap()).unwrap();
                    d.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
                };
                for j in 0..=student_layers {
                    let k = map.hidden(j);
                    let d = masked_diff(&direct.hidden_states[k], &cached.hidden_states[k], &masks.tokens);
                    assert!(d < 1e-5, "hidden state {k}: max |Δ| {d}");
                }
                for i in 0..student_layers {
                    let k = map.attention(i);
                    let d = masked_diff(&direct.attention_scores[k], &cached.attention_scores[k], &masks.pairs);
                    assert!(d < 1e-5, "scores {k}: max |Δ| {d}");
                    // The cache really holds the teacher's values, not zeros.
                    let n = cached.attention_scores[k].abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(n > 0.0);
                }
                // The same loss against a student of the mapped depth (the teacher's first layers
                // serve as a stand-in student: only shapes and the mapping matter here).
                let s_out = {
                    let mut o = teacher.model.forward_with(&batch.input, &mut Mode::Eval, true).unwrap();
                    o.hidden_states.truncate(student_layers + 1);
                    o.attention_scores.truncate(student_layers);
                    let scale = Tensor::new(1.1f32, &dev).unwrap();
                    o.hidden_states = o.hidden_states.iter().map(|t| t.broadcast_mul(&scale).unwrap()).collect();
                    o.attention_scores = o.attention_scores.iter().map(|t| t.broadcast_mul(&scale).unwrap()).collect();
                    o
                };
                let (h, nh) = (cfg.hidden_size, cfg.num_attention_heads);
                let a = layerwise_loss(&s_out, &direct, &map, &masks, nh, h).unwrap().0.to_scalar::<f32>().unwrap();
                let b = layerwise_loss(&s_out, &cached, &map, &masks, nh, h).unwrap().0.to_scalar::<f32>().unwrap();
                assert!(a > 0.0 && (a - b).abs() <= 1e-5 * a.abs(), "loss {a} vs {b}");
            }
        }
    }
}
