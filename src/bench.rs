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
    /// One product including the packing of B (a fresh right-hand side, as in attention).
    pub median_s: f64,
    /// 2·m·k·n / second, in billions.
    pub gops: f64,
    /// One product against an already packed B (prepared weights: packed once per model).
    pub prepacked_median_s: f64,
    pub prepacked_gops: f64,
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
            let packed = crate::mpc::ring::PackedB::new(&b, k, n);
            let mut tp: Vec<f64> = (0..repeats.max(1))
                .map(|_| {
                    let t = Instant::now();
                    let c = crate::mpc::ring::matmul_packed(&a, m, &packed);
                    std::hint::black_box(c);
                    t.elapsed().as_secs_f64()
                })
                .collect();
            let (med, medp) = (pct(&mut ts, 0.5), pct(&mut tp, 0.5));
            let ops = 2.0 * (m * k * n) as f64;
            GemmBench { m, k, n, median_s: med, gops: ops / med / 1e9, prepacked_median_s: medp, prepacked_gops: ops / medp / 1e9 }
        })
        .collect()
}

/// One measured private-inference configuration (encoder layers only, embedding output given).
#[derive(Debug, Serialize)]
pub struct PrivateBench {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub seq_len: usize,
    pub variant: String,
    /// Weight preparation (W − B openings), once per model.
    pub prepare_seconds: f64,
    /// Wall time of the forward pass, dealer work included (it runs concurrently).
    pub forward_seconds: f64,
    pub rounds: u64,
    pub bytes_per_party: u64,
    pub dealer_bytes: u64,
    pub breakdown: std::collections::BTreeMap<String, crate::mpc::party::ClassStats>,
    pub max_abs_diff_vs_plaintext: f64,
}

/// Run a random-weight encoder of the given shape under 2-party MPC (in-process) and compare
/// its output with the plaintext model on the same input.
pub fn private_encoder(
    layers: usize,
    hidden: usize,
    heads: usize,
    seq_len: usize,
    act: crate::model::HiddenAct,
    sm: crate::model::SoftmaxAct,
    frac: u32,
) -> anyhow::Result<PrivateBench> {
    use crate::model::bert::Masks;
    use crate::mpc::bert::{share_weights, PrivateLayer};
    use crate::mpc::fixed::{decode, encode};
    use crate::mpc::party::Share;
    use crate::mpc::ring::RingTensor;
    let dev = Device::Cpu;
    let mut cfg = crate::model::BertConfig::tiny(layers, hidden, heads, 64);
    cfg.hidden_act = act;
    cfg.softmax_act = sm;
    let md = ModelDir::random(cfg.clone(), 2, 5, &dev)?;
    let named: Vec<(String, Vec<usize>, Vec<f32>)> = sorted_vars(&md.varmap)
        .into_iter()
        .filter(|(n, _)| n.starts_with("bert.encoder"))
        .map(|(n, v)| {
            let t = v.as_tensor();
            Ok((n, t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))
        })
        .collect::<candle_core::Result<_>>()?;
    let xs: Vec<f32> = (0..seq_len * hidden).map(|i| (((i * 7919) % 61) as f32 - 30.0) / 15.0).collect();
    let x = candle_core::Tensor::from_vec(xs.clone(), (1, seq_len, hidden), &dev)?;
    let masks = Masks::new(&candle_core::Tensor::ones((1, seq_len), candle_core::DType::F32, &dev)?, candle_core::DType::F32)?;
    let mut h = x;
    for layer in &md.model.bert.layers {
        h = layer.forward(&h, &masks, &mut Mode::Eval, false)?.0;
    }
    let want: Vec<f32> = h.flatten_all()?.to_vec1()?;
    let shares = std::sync::Arc::new(share_weights(&named, &cfg, frac));
    let xr = RingTensor::new(&[seq_len, hidden], xs.iter().map(|&v| encode(v as f64, frac)).collect());
    let (x0, x1) = crate::mpc::run::share_public(&xr);
    let xsh = [x0, x1];
    let cfg2 = cfg.clone();
    let ((o0, p0), (o1, _), d) = crate::mpc::run::run_local(move |p| {
        let t = Instant::now();
        let prepared: Vec<PrivateLayer> = (0..cfg2.num_hidden_layers)
            .map(|i| PrivateLayer::prepare(p, &shares[p.id], &cfg2, i, frac))
            .collect::<Result<_, _>>()?;
        let prep = t.elapsed().as_secs_f64();
        let prep_stats = p.totals();
        let t = Instant::now();
        let mut hs = Share { ring: xsh[p.id].clone(), frac };
        for layer in &prepared {
            hs = layer.forward(p, &hs)?;
        }
        Ok::<_, crate::mpc::bert::PrivateModelError>((hs.ring, prep, t.elapsed().as_secs_f64(), prep_stats))
    });
    let (r0, prep, fwd, prep_stats) = o0?;
    let (r1, ..) = o1?;
    let got = r0.add(&r1);
    let diff = got.data.iter().zip(&want).map(|(&g, &w)| (decode(g, frac) - w as f64).abs()).fold(0.0, f64::max);
    let tot = p0.totals();
    Ok(PrivateBench {
        layers,
        hidden,
        heads,
        seq_len,
        variant: format!("{}+{}", act.name(), sm.name()),
        prepare_seconds: prep,
        forward_seconds: fwd,
        rounds: tot.rounds - prep_stats.rounds,
        bytes_per_party: tot.bytes_sent - prep_stats.bytes_sent,
        dealer_bytes: d.bytes_sent,
        breakdown: p0.stats.iter().map(|(k, v)| (format!("{k:?}").to_lowercase(), v.clone())).collect(),
        max_abs_diff_vs_plaintext: diff,
    })
}

/// Median step times of the two distillation stages.
#[derive(Debug, Serialize)]
pub struct DistillBench {
    pub task: String,
    pub batch_size: usize,
    pub steps_timed: usize,
    pub student: String,
    pub mean_padded_len: f64,
    /// Teacher forward (no grad, with scores) + student forward + layer-wise loss + backward + BertAdam.
    pub stage1_step_median_s: f64,
    pub stage1_examples_per_s: f64,
    /// Teacher forward + student forward + soft cross-entropy + backward + BertAdam.
    pub stage2_step_median_s: f64,
    pub stage2_examples_per_s: f64,
    pub threads: usize,
}

/// KD step throughput: MiniLM-L6 teacher (GeLU+softmax, seeded 2-class head) → 6-layer
/// Quad+2Quad student initialised from it, on MRPC train rows in file order (the batches
/// `scripts/bench_kd_torch.py` times), each batch padded to its longest member.
pub fn distill_throughput(model: &Path, mrpc: &Path, batch_size: usize, steps: usize, warmup: usize) -> anyhow::Result<DistillBench> {
    use crate::train::distill::{layerwise_loss, soft_cross_entropy, PadMasks};
    use crate::train::recipe::{StudentInit, StudentSpec};
    let dev = Device::Cpu;
    let head = HeadSpec { label_names: Task::Mrpc.label_names(), regression: false };
    let teacher = ModelDir::load(model, Some(&head), 0, &dev)?;
    let spec = StudentSpec {
        hidden_act: crate::model::HiddenAct::Quad,
        softmax_act: crate::model::SoftmaxAct::TwoQuad,
        layers: None,
        init: StudentInit::Teacher,
        softmax_2quad_c: None,
        from: None,
    };
    let (student, map, _) = crate::train::student::build_student(&teacher, &spec, 0, &dev)?;
    let enc = TextEncoder::load(model, 128, teacher.config.vocab_size)?;
    let rows = enc.encode(&load_split(Task::Mrpc, mrpc, "train", Some((steps + warmup) * batch_size))?)?;
    let (heads, hidden) = (student.config.num_attention_heads, student.config.hidden_size);
    let mut result = [(0.0, 0.0); 2];
    let mut padded = 0usize;
    let mut timed = 0usize;
    for stage in 1..=2u8 {
        let mut opt = Adam::new(sorted_vars(&student.varmap), AdamConfig::bert_adam());
        let mut times = Vec::new();
        for (i, chunk) in rows.chunks(batch_size).enumerate() {
            let items: Vec<&Encoded> = chunk.iter().collect();
            let t = Instant::now();
            let batch = collate(&items, &dev)?;
            let tout = teacher.model.forward_with(&batch.input, &mut Mode::Eval, stage == 1)?;
            let mut rng = step_rng(0, 2, i as u64);
            let sout = student.model.forward_with(&batch.input, &mut Mode::Train(&mut rng), stage == 1)?;
            let loss = if stage == 1 {
                let tout = crate::model::bert::ModelOutput {
                    logits: tout.logits.detach(),
                    pooled: tout.pooled.detach(),
                    hidden_states: tout.hidden_states.iter().map(|t| t.detach()).collect(),
                    attention_scores: tout.attention_scores.iter().map(|t| t.detach()).collect(),
                };
                let masks = PadMasks::new(&batch.input.attention_mask)?;
                layerwise_loss(&sout, &tout, &map, &masks, heads, hidden)?.0
            } else {
                soft_cross_entropy(&sout.logits, &tout.logits.detach(), 1.0)?
            };
            let grads = loss.backward()?;
            opt.step(&grads, 1e-5)?;
            let _ = loss.to_scalar::<f32>()?;
            if i >= warmup {
                times.push(t.elapsed().as_secs_f64());
                if stage == 1 {
                    padded += batch.seq_len;
                }
            }
        }
        let med = pct(&mut times.clone(), 0.5);
        timed = times.len();
        result[stage as usize - 1] = (med, batch_size as f64 / med);
    }
    Ok(DistillBench {
        task: "mrpc".into(),
        batch_size,
        steps_timed: timed,
        student: "quad+2quad, 6 layers".into(),
        mean_padded_len: padded as f64 / timed.max(1) as f64,
        stage1_step_median_s: result[0].0,
        stage1_examples_per_s: result[0].1,
        stage2_step_median_s: result[1].0,
        stage2_examples_per_s: result[1].1,
        threads: rayon::current_num_threads(),
    })
}

/// One scope of a private-model measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ScopeStats {
    /// Wall time minus the time spent obtaining preprocessing (P0's view).
    pub online_seconds: f64,
    /// Time spent obtaining preprocessing (the larger of the two parties), dealer work included.
    pub offline_seconds: f64,
    pub rounds: u64,
    pub bytes_per_party: u64,
    pub client_bytes_per_party: u64,
    pub network: std::collections::BTreeMap<String, crate::mpc::eval::NetworkEstimate>,
}

/// A random-weight BertForSequenceClassification under MPC (one inference, batch 1).
#[derive(Debug, Clone, Serialize)]
pub struct PrivateModelBench {
    pub config: String,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub vocab: usize,
    pub seq_len: usize,
    pub variant: String,
    /// Weight preparation (W − B openings), once per model; not in the scopes.
    pub prepare_seconds: f64,
    /// Embeddings (client-masked one-hot), encoder, pooler, classifier.
    pub full: ScopeStats,
    /// Encoder + pooler + classifier with the embedding output given (CrypTen's benchmark scope).
    pub without_embedding: ScopeStats,
    pub dealer_bytes: u64,
    pub breakdown: std::collections::BTreeMap<String, crate::mpc::party::ClassStats>,
    pub max_abs_logit_diff_vs_plaintext: f64,
}

/// (layers, hidden, heads) of the named benchmark shapes.
pub fn preset(name: &str) -> Option<(usize, usize, usize)> {
    match name {
        "tiny" => Some((2, 128, 2)),
        "mini" => Some((4, 256, 4)),
        "small" => Some((4, 512, 8)),
        "base" => Some((12, 768, 12)),
        _ => None,
    }
}

fn scope(
    rounds: u64,
    bytes: u64,
    client: u64,
    online: f64,
    offline: f64,
    dealer_bytes: u64,
) -> ScopeStats {
    let network = crate::mpc::eval::PROFILES
        .iter()
        .map(|pr| {
            let e = crate::mpc::eval::estimate(pr, online, rounds as f64, (bytes + client) as f64, offline, dealer_bytes as f64);
            (pr.name.to_string(), e)
        })
        .collect();
    ScopeStats { online_seconds: online, offline_seconds: offline, rounds, bytes_per_party: bytes, client_bytes_per_party: client, network }
}

/// Run a random-weight model of the given shape and variant under MPC (in-process) on `seq_len`
/// pseudo-random token ids, and compare its logits with the plaintext model's.
#[allow(clippy::too_many_arguments)]
pub fn private_model(
    config: &str,
    layers: usize,
    hidden: usize,
    heads: usize,
    vocab: usize,
    seq_len: usize,
    act: crate::model::HiddenAct,
    sm: crate::model::SoftmaxAct,
    frac: u32,
) -> anyhow::Result<PrivateModelBench> {
    let dev = Device::Cpu;
    let mut cfg = crate::model::BertConfig::tiny(layers, hidden, heads, vocab);
    cfg.hidden_act = act;
    cfg.softmax_act = sm;
    cfg.max_position_embeddings = cfg.max_position_embeddings.max(seq_len);
    let md = ModelDir::random(cfg, 2, 5, &dev)?;
    private_model_dir(config, &md, seq_len, frac)
}

/// As [`private_model`], for an already loaded model (e.g. a trained checkpoint): `seq_len`
/// pseudo-random token ids, logits compared with the plaintext model's.
pub fn private_model_dir(config: &str, md: &ModelDir, seq_len: usize, frac: u32) -> anyhow::Result<PrivateModelBench> {
    use crate::model::bert::ModelInput;
    use crate::mpc::eval::{run_private, PrivateRow};
    use crate::mpc::party::LayerClass;
    let dev = Device::Cpu;
    let c = &md.config;
    let (layers, hidden, heads, vocab) = (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.vocab_size);
    let (act, sm) = (c.hidden_act, c.softmax_act);
    if seq_len > c.max_position_embeddings {
        anyhow::bail!("sequence length {seq_len} exceeds the model's {} positions", c.max_position_embeddings);
    }
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let ids: Vec<u32> = (0..seq_len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect();
    let input = ModelInput {
        input_ids: candle_core::Tensor::from_vec(ids.clone(), (1, seq_len), &dev)?,
        token_type_ids: candle_core::Tensor::zeros((1, seq_len), candle_core::DType::U32, &dev)?,
        attention_mask: candle_core::Tensor::ones((1, seq_len), candle_core::DType::F32, &dev)?,
    };
    let want: Vec<f32> = md.model.forward(&input, &mut Mode::Eval)?.logits.flatten_all()?.to_vec1()?;
    let rows = vec![PrivateRow { ids, type_ids: vec![0; seq_len] }];
    let run = run_private(md, &rows, frac, std::sync::Arc::new(|_| {}))?;
    let diff = run.logits[0].iter().zip(&want).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
    let r = &run.rows[0];
    let emb = r.breakdown.get(&LayerClass::Embedding).cloned().unwrap_or_default();
    let online = r.seconds - r.offline_seconds;
    let full = scope(r.rounds, r.bytes_per_party, r.client_bytes_per_party, online, r.offline_seconds, run.dealer.bytes_sent);
    let without = scope(
        r.rounds - emb.rounds,
        r.bytes_per_party - emb.bytes_sent,
        r.client_bytes_per_party - emb.client_bytes,
        (online - (emb.seconds - emb.offline_seconds)).max(0.0),
        (r.offline_seconds - emb.offline_seconds).max(0.0),
        run.dealer.bytes_sent.saturating_sub((seq_len * hidden * 8) as u64),
    );
    Ok(PrivateModelBench {
        config: config.to_string(),
        layers,
        hidden,
        heads,
        vocab,
        seq_len,
        variant: format!("{}+{}", act.name(), sm.name()),
        prepare_seconds: run.prepare_seconds,
        full,
        without_embedding: without,
        dealer_bytes: run.dealer.bytes_sent,
        breakdown: r.breakdown.iter().map(|(k, v)| (k.name().to_string(), v.clone())).collect(),
        max_abs_logit_diff_vs_plaintext: diff,
    })
}

/// The markdown table of a benchmark matrix.
pub fn private_markdown(rows: &[PrivateModelBench]) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mut s = String::from(
        "| config | seq | variant | scope | online s | offline s | rounds | MB/party (to peer) | MB/party (client) | dealer MB | LAN s | WAN s | max logit diff |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        for (name, sc) in [("full", &r.full), ("no-embedding", &r.without_embedding)] {
            s += &format!(
                "| {} {}L/{} | {} | {} | {} | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1e} |\n",
                r.config,
                r.layers,
                r.hidden,
                r.seq_len,
                r.variant,
                name,
                sc.online_seconds,
                sc.offline_seconds,
                sc.rounds,
                mb(sc.bytes_per_party),
                mb(sc.client_bytes_per_party),
                mb(r.dealer_bytes),
                sc.network["lan"].online_seconds,
                sc.network["wan"].online_seconds,
                r.max_abs_logit_diff_vs_plaintext
            );
        }
    }
    s += "\nPer layer class (full scope; rounds / MB per party to the peer / MB client / seconds):\n\n";
    s += "| config | seq | variant | embedding | linear | attention | softmax | activation | layernorm | pooler | classifier |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        s += &format!("| {} | {} | {} |", r.config, r.seq_len, r.variant);
        for c in ["embedding", "linear", "attention", "softmax", "activation", "layernorm", "pooler", "classifier"] {
            match r.breakdown.get(c) {
                Some(v) => s += &format!(" {} / {:.1} / {:.1} / {:.2} |", v.rounds, mb(v.bytes_sent), mb(v.client_bytes), v.seconds),
                None => s += " – |",
            }
        }
        s.push('\n');
    }
    s
}
