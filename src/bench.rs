//! Throughput benchmarks run by `kd bench`: a fine-tuning step (forward, loss, backward, AdamW)
//! and evaluation on SST-2, with the same batches `scripts/bench_torch.py` times in PyTorch
//! (consecutive rows in file order, each batch padded to its longest member), so the two can be
//! compared as a ratio. Medians over timed steps after warm-up.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::data::batch::{collate, Encoded, TextEncoder};
use crate::data::{load_split, Task};
use crate::eval::{predict, task_loss};
use crate::model::checkpoint::{sorted_vars, HeadSpec};
use crate::model::rng::step_rng;
use crate::model::{ModelDir, Mode};
use crate::train::optim::{Adam, AdamConfig};

#[derive(Debug, Serialize)]
pub struct TrainBench {
    pub batch_size: usize,
    pub steps_timed: usize,
    pub train_step_median_s: f64,
    pub train_step_p10_s: f64,
    pub train_step_p90_s: f64,
    /// Median seconds of the three phases of a step.
    pub forward_median_s: f64,
    pub backward_median_s: f64,
    pub optimizer_median_s: f64,
    pub train_examples_per_s: f64,
    pub mean_tokens_per_batch: f64,
    pub mean_padded_len: f64,
    pub eval_examples: usize,
    pub eval_median_s: f64,
    pub eval_examples_per_s: f64,
    pub threads: usize,
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub fn train_throughput(
    model: &Path,
    sst2: &Path,
    batch_size: usize,
    steps: usize,
    warmup: usize,
    eval_repeats: usize,
) -> anyhow::Result<TrainBench> {
    let dev = Device::Cpu;
    let head = HeadSpec { label_names: Task::Sst2.label_names(), regression: false };
    let md = ModelDir::load(model, Some(&head), 0, &dev)?;
    let enc = TextEncoder::load(model, 128, md.config.vocab_size)?;
    let n = (steps + warmup) * batch_size;
    let train = enc.encode(&load_split(Task::Sst2, sst2, "train", Some(n))?)?;
    let mut opt = Adam::new(sorted_vars(&md.varmap), AdamConfig::adamw());
    let mut times = Vec::new();
    let (mut tf, mut tb, mut to) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tokens, mut padded) = (0usize, 0usize);
    for (i, chunk) in train.chunks(batch_size).enumerate() {
        let items: Vec<&Encoded> = chunk.iter().collect();
        let t = Instant::now();
        let batch = collate(&items, &dev)?;
        let mut rng = step_rng(0, 2, i as u64);
        let out = md.model.forward(&batch.input, &mut Mode::Train(&mut rng))?;
        let loss = task_loss(&out.logits, batch.labels.as_ref().expect("SST-2 train is labelled"), false)?;
        let t_f = t.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        let t_b = t.elapsed().as_secs_f64();
        opt.step(&grads, 1e-5)?;
        let _ = loss.to_scalar::<f32>()?;
        if i >= warmup {
            let t_o = t.elapsed().as_secs_f64();
            tf.push(t_f);
            tb.push(t_b - t_f);
            to.push(t_o - t_b);
            times.push(t.elapsed().as_secs_f64());
            tokens += batch.tokens;
            padded += batch.seq_len;
        }
    }
    let k = times.len().max(1) as f64;
    let med = pct(&mut times.clone(), 0.5);
    let dev_rows = enc.encode(&load_split(Task::Sst2, sst2, "dev", None)?)?;
    let mut ev = Vec::new();
    for _ in 0..eval_repeats.max(1) {
        let t = Instant::now();
        // Same batches as the PyTorch script: file order, not length-sorted.
        for chunk in dev_rows.chunks(32) {
            let _ = predict(&md.model, chunk, chunk.len(), &dev, |_| {})?;
        }
        ev.push(t.elapsed().as_secs_f64());
    }
    let ev_med = pct(&mut ev, 0.5);
    Ok(TrainBench {
        batch_size,
        steps_timed: times.len(),
        train_step_median_s: med,
        train_step_p10_s: pct(&mut times.clone(), 0.1),
        train_step_p90_s: pct(&mut times, 0.9),
        forward_median_s: pct(&mut tf, 0.5),
        backward_median_s: pct(&mut tb, 0.5),
        optimizer_median_s: pct(&mut to, 0.5),
        train_examples_per_s: batch_size as f64 / med,
        mean_tokens_per_batch: tokens as f64 / k,
        mean_padded_len: padded as f64 / k,
        eval_examples: dev_rows.len(),
        eval_median_s: ev_med,
        eval_examples_per_s: dev_rows.len() as f64 / ev_med,
        threads: rayon::current_num_threads(),
    })
}

/// One wrapping-u64 GEMM shape and its median speed.
#[derive(Debug, Serialize)]
pub struct GemmBench {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub median_s: f64,
    /// 2·m·k·n / second, in billions.
    pub gops: f64,
}

/// The MPC executor's compute floor: wrapping u64 GEMMs at BERT shapes (median of `repeats`).
pub fn ring_gemm(shapes: &[(usize, usize, usize)], repeats: usize) -> Vec<GemmBench> {
    shapes
        .iter()
        .map(|&(m, k, n)| {
            let a: Vec<u64> = (0..m * k).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
            let b: Vec<u64> = (0..k * n).map(|i| (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).collect();
            let mut ts: Vec<f64> = (0..repeats.max(1))
                .map(|_| {
                    let t = Instant::now();
                    let c = crate::mpc::ring::matmul_u64(&a, &b, m, k, n);
                    std::hint::black_box(c);
                    t.elapsed().as_secs_f64()
                })
                .collect();
            let med = pct(&mut ts, 0.5);
            GemmBench { m, k, n, median_s: med, gops: 2.0 * (m * k * n) as f64 / med / 1e9 }
        })
        .collect()
}
