//! Plaintext evaluation: batched prediction with dynamic padding, GLUE metrics, the predictions
//! CSV (`index,label,prediction,logit_0,…`) and the JSON report `kd eval --output` writes.

pub mod metrics;

use std::io::Write;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::data::batch::{collate, eval_order, Encoded};
use crate::data::{Label, Task};
use crate::model::{BertForSequenceClassification, Mode, ModelError};
pub use metrics::Metrics;

/// One predicted row.
#[derive(Debug, Clone)]
pub struct PredRow {
    pub index: usize,
    pub label: Option<Label>,
    pub logits: Vec<f32>,
}

impl PredRow {
    /// Predicted class id (argmax, first maximum on ties).
    pub fn class(&self) -> usize {
        argmax(&self.logits)
    }
}

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Predict every row of `data`; the result is in data order.
pub fn predict(
    model: &BertForSequenceClassification,
    data: &[Encoded],
    batch_size: usize,
    device: &Device,
    on_batch: impl FnMut(usize),
) -> Result<Vec<PredRow>, ModelError> {
    Ok(predict_inner(model, data, batch_size, device, on_batch, false)?.0)
}

/// [`predict`], plus the largest |attention score| (q·k/√d_h, before normalisation) over every
/// layer, head and real (query, key) pair of every row: what the private attention's narrow
/// truncations rely on (`mpc::bert::SCORE_BITS`).
pub fn predict_with_max_score(
    model: &BertForSequenceClassification,
    data: &[Encoded],
    batch_size: usize,
    device: &Device,
    on_batch: impl FnMut(usize),
) -> Result<(Vec<PredRow>, f32), ModelError> {
    predict_inner(model, data, batch_size, device, on_batch, true)
}

fn predict_inner(
    model: &BertForSequenceClassification,
    data: &[Encoded],
    batch_size: usize,
    device: &Device,
    mut on_batch: impl FnMut(usize),
    scores: bool,
) -> Result<(Vec<PredRow>, f32), ModelError> {
    let mut rows: Vec<Option<PredRow>> = vec![None; data.len()];
    let mut max_score = 0f32;
    for positions in eval_order(data, batch_size) {
        let items: Vec<&Encoded> = positions.iter().map(|&p| &data[p]).collect();
        let batch = collate(&items, device)?;
        let out = model.forward_with(&batch.input, &mut Mode::Eval, scores)?;
        if scores {
            // Real pairs only: padded keys carry the additive mask, padded queries are not real.
            let (b, l) = batch.input.attention_mask.dims2()?;
            let m = batch.input.attention_mask.to_dtype(candle_core::DType::F32)?;
            let pair = m.reshape((b, 1, l, 1))?.broadcast_mul(&m.reshape((b, 1, 1, l))?)?;
            for s in &out.attention_scores {
                let a = s.broadcast_mul(&pair)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                max_score = max_score.max(a);
            }
        }
        let logits: Vec<Vec<f32>> = out.logits.to_vec2()?;
        for (&p, l) in positions.iter().zip(logits) {
            rows[p] = Some(PredRow { index: data[p].index, label: data[p].label, logits: l });
        }
        on_batch(positions.len());
    }
    Ok((rows.into_iter().map(|r| r.expect("every row is in exactly one batch")).collect(), max_score))
}

/// Task metrics of predicted rows, or None when the split is unlabelled.
pub fn score(task: Task, rows: &[PredRow]) -> Option<Metrics> {
    if task.is_regression() {
        let mut p = Vec::with_capacity(rows.len());
        let mut g = Vec::with_capacity(rows.len());
        for r in rows {
            let Some(Label::Score(s)) = r.label else { return None };
            p.push(r.logits[0]);
            g.push(s);
        }
        Some(metrics::compute_regression(&p, &g))
    } else {
        let mut p = Vec::with_capacity(rows.len());
        let mut g = Vec::with_capacity(rows.len());
        for r in rows {
            let Some(Label::Class(c)) = r.label else { return None };
            p.push(r.class());
            g.push(c);
        }
        Some(metrics::compute_classification(task, &p, &g))
    }
}

/// The predictions CSV: `index,label,prediction,logit_0,…,logit_{k-1}` (classification) or
/// `index,label,prediction` (regression). `label` is empty for unlabelled rows.
pub fn predictions_csv(rows: &[PredRow], regression: bool) -> String {
    let k = rows.first().map(|r| r.logits.len()).unwrap_or(0);
    let mut s = String::from("index,label,prediction");
    if !regression {
        for i in 0..k {
            s += &format!(",logit_{i}");
        }
    }
    s.push('\n');
    for r in rows {
        let label = match r.label {
            Some(Label::Class(c)) => c.to_string(),
            Some(Label::Score(x)) => format!("{x}"),
            None => String::new(),
        };
        if regression {
            s += &format!("{},{},{}\n", r.index, label, r.logits[0]);
        } else {
            s += &format!("{},{},{}", r.index, label, r.class());
            for l in &r.logits {
                s += &format!(",{l}");
            }
            s.push('\n');
        }
    }
    s
}

/// The JSON document of `kd eval --output`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub task: String,
    pub split: String,
    pub examples: usize,
    pub metrics: Metrics,
    pub model: String,
    pub max_seq_len: usize,
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// Append one row to a results CSV (header written when the file is new). A single
/// `write` of a whole line to an O_APPEND file, so concurrent runs do not interleave.
pub fn append_results(path: &Path, r: &EvalReport, mode: &str) -> std::io::Result<()> {
    if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(p)?;
    }
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let mut line = String::new();
    if new {
        line += "mode,model,task,split,examples,accuracy,f1,mcc,pearson,spearman,seconds,max_seq_len\n";
    }
    let m = &r.metrics;
    line += &format!(
        "{mode},{},{},{},{},{},{},{},{},{},{:.3},{}\n",
        r.model.replace(',', "_"),
        r.task,
        r.split,
        r.examples,
        opt(m.accuracy),
        opt(m.f1),
        opt(m.mcc),
        opt(m.pearson),
        opt(m.spearman),
        r.seconds,
        r.max_seq_len
    );
    f.write_all(line.as_bytes())
}

/// Cross-entropy (classification) or MSE (regression) of a batch — HF's loss choice.
pub fn task_loss(logits: &Tensor, labels: &Tensor, regression: bool) -> candle_core::Result<Tensor> {
    if regression {
        let pred = logits.squeeze(1)?;
        (pred - labels)?.sqr()?.mean_all()
    } else {
        candle_nn::loss::cross_entropy(logits, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_layout() {
        let rows = vec![
            PredRow { index: 0, label: Some(Label::Class(1)), logits: vec![0.1, 0.7] },
            PredRow { index: 1, label: None, logits: vec![0.9, -1.0] },
        ];
        let s = predictions_csv(&rows, false);
        assert_eq!(s, "index,label,prediction,logit_0,logit_1\n0,1,1,0.1,0.7\n1,,0,0.9,-1\n");
        let r = vec![PredRow { index: 3, label: Some(Label::Score(2.5)), logits: vec![3.25] }];
        assert_eq!(predictions_csv(&r, true), "index,label,prediction\n3,2.5,3.25\n");
    }

    #[test]
    fn scoring_uses_argmax_and_regression_scores() {
        let rows = vec![
            PredRow { index: 0, label: Some(Label::Class(1)), logits: vec![0.1, 0.7] },
            PredRow { index: 1, label: Some(Label::Class(1)), logits: vec![0.9, -1.0] },
        ];
        assert_eq!(score(Task::Sst2, &rows).unwrap().accuracy, Some(0.5));
        let unl = vec![PredRow { index: 0, label: None, logits: vec![0.0, 1.0] }];
        assert!(score(Task::Sst2, &unl).is_none());
    }
}
