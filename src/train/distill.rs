//! `kd train`: MPCFormer's two-stage knowledge distillation (spec §2) into an MPC-friendly student.
//!
//! - **Stage 1, layer-wise**: the student (approximations in its config) is trained on
//!   Σ_layers MSE(attention scores) + Σ_{j=0..S} MSE(hidden states) against the teacher, through
//!   the layer map of [`LayerMap`]. Scores are the scaled pre-normalisation scores; padded
//!   positions are excluded from both terms (the reference zeroes masked scores but averages over
//!   the max-length padded tensor; with dynamic padding we average over real entries only, so
//!   a batch's loss does not depend on how far it was padded).
//! - **Stage 2, prediction layer**: soft cross-entropy against the teacher's logits,
//!   mean over batch × classes of −softmax(z_t/T)·log_softmax(z_s/T) as in the reference (no T²);
//!   STS-B trains MSE against the gold score. Dev evaluation every `eval_every` steps and at the
//!   end; the best checkpoint (task's GLUE metric) is kept. Objective `labels` trains on gold
//!   labels instead (the "w/o d" baselines). Optional, beyond the paper: `stage2.ema` evaluates,
//!   selects and saves a moving average of the weights instead of the raw ones
//!   ([`crate::train::ema`]); training follows the raw weights either way.
//!
//! The teacher runs without gradients and, by default, without dropout (the reference leaves it
//! in train mode, a quirk that `teacher_dropout = true` reproduces).
//!
//! Output directory: `OUT/` is the best student (HF format); `OUT/stage1/` the student after
//! stage 1; `OUT/train_state/` the resume point (written atomically at every log/eval point and
//! stage change); `OUT/recipe.toml` the resolved recipe; `OUT/log.csv`, `OUT/loss.png`,
//! `OUT/train.json`. All randomness derives from (seed, purpose, stage, step), so a resumed run
//! sees the same batches and dropout masks as an uninterrupted one.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::data::batch::{collate, train_order, Encoded, TextEncoder};
use crate::data::{load_split, subsample};
use crate::eval::{predict, score, task_loss, Metrics};
use crate::model::bert::ModelOutput;
use crate::model::checkpoint::{save_model, sorted_vars, write_file_atomic, HeadSpec};
use crate::model::rng::step_rng;
use crate::model::{ModelDir, Mode};
use crate::train::ema::{WeightEma, EMA_FILE};
use crate::train::finetune::{io, progress_bar, save_best, save_state, TrainError};
use crate::train::optim::Adam;
use crate::train::recipe::{Objective, OptimSpec, Recipe};
use crate::train::student::{build_student, LayerMap, StudentReport};
use crate::train::teacher_cache::TeacherCache;

const PURPOSE_SHUFFLE: u64 = 11;
const PURPOSE_DROPOUT: u64 = 12;
const PURPOSE_TEACHER_DROPOUT: u64 = 13;

/// One row of `log.csv`: running loss terms since the previous row, and dev metrics (stage 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRow {
    pub stage: u8,
    pub step: u64,
    pub epoch: f64,
    pub lr: f64,
    pub loss: f64,
    pub att_loss: f64,
    pub hid_loss: f64,
    pub pred_loss: f64,
    pub dev_metric: Option<f64>,
    pub metrics: Metrics,
    pub seconds: f64,
}

/// Saved progress (`train_state/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillState {
    pub recipe: Recipe,
    /// 1 or 2: the stage in progress; 3: finished.
    pub stage: u8,
    /// Optimizer steps done in the current stage.
    pub step: u64,
    pub best_metric: Option<f64>,
    pub best_step: Option<u64>,
    pub best_metrics: Option<Metrics>,
    pub teacher_metrics: Option<Metrics>,
    /// Training seconds and examples per stage.
    pub seconds: [f64; 2],
    pub examples: [u64; 2],
    pub log: Vec<LogRow>,
    /// Loss sums since the last log row (total, att, hid, pred) and their count.
    pub acc: [f64; 4],
    pub acc_n: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub steps: u64,
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// `train.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub recipe: Recipe,
    pub primary_metric: String,
    pub teacher_metric: Option<f64>,
    pub teacher_metrics: Option<Metrics>,
    pub best_metric: Option<f64>,
    pub best_step: Option<u64>,
    pub best_metrics: Option<Metrics>,
    /// best_metric / teacher_metric.
    pub fraction_of_teacher: Option<f64>,
    /// How closely the best student follows its teacher on dev, independent of the labels:
    /// argmax agreement (classification) or the Pearson correlation of the outputs (STS-B).
    pub teacher_agreement: Option<f64>,
    pub stage1: Option<StageSummary>,
    pub stage2: StageSummary,
    pub student: StudentReport,
    pub resumed: bool,
    pub finished: bool,
}

/// The number of optimizer steps of a stage: ceil(batches per epoch × epochs), at least 1.
pub fn stage_steps(rows: usize, batch_size: usize, epochs: f64) -> u64 {
    let per_epoch = rows.div_ceil(batch_size.max(1)) as f64;
    ((per_epoch * epochs).ceil() as u64).max(1)
}

/// Masks of a batch: token mask [B, L, 1] and query×key pair mask [B, 1, L, L], and the number
/// of real tokens and real (query, key) pairs.
pub struct PadMasks {
    pub tokens: Tensor,
    pub pairs: Tensor,
    pub n_tokens: f64,
    pub n_pairs: f64,
}

impl PadMasks {
    pub fn new(attention_mask: &Tensor) -> candle_core::Result<Self> {
        let (b, l) = attention_mask.dims2()?;
        let m = attention_mask.to_dtype(DType::F32)?;
        let lens: Vec<f32> = m.sum(1)?.to_vec1()?;
        let tokens = m.reshape((b, l, 1))?;
        let pairs = m.reshape((b, 1, l, 1))?.broadcast_mul(&m.reshape((b, 1, 1, l))?)?;
        let n_tokens = lens.iter().map(|&x| x as f64).sum();
        let n_pairs = lens.iter().map(|&x| (x as f64) * (x as f64)).sum();
        Ok(Self { tokens, pairs, n_tokens, n_pairs })
    }
}

/// Stage-1 loss: (total, attention term, hidden term). Teacher tensors must be detached.
pub fn layerwise_loss(
    student: &ModelOutput,
    teacher: &ModelOutput,
    map: &LayerMap,
    masks: &PadMasks,
    heads: usize,
    hidden: usize,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let mut att: Option<Tensor> = None;
    for (i, s) in student.attention_scores.iter().enumerate() {
        let t = &teacher.attention_scores[map.attention(i)];
        // Multiply before subtracting: the additive −1e4 of padded keys must not enter the
        // difference (at that magnitude f32 keeps only ~3 decimals of the real score).
        let d = (s.broadcast_mul(&masks.pairs)? - t.broadcast_mul(&masks.pairs)?)?;
        let l = (d.sqr()?.sum_all()? / (masks.n_pairs * heads as f64))?;
        att = Some(match att {
            Some(a) => (a + l)?,
            None => l,
        });
    }
    let mut hid: Option<Tensor> = None;
    for (j, s) in student.hidden_states.iter().enumerate() {
        let t = &teacher.hidden_states[map.hidden(j)];
        let d = (s - t)?.broadcast_mul(&masks.tokens)?;
        let l = (d.sqr()?.sum_all()? / (masks.n_tokens * hidden as f64))?;
        hid = Some(match hid {
            Some(h) => (h + l)?,
            None => l,
        });
    }
    let dev = student.logits.device();
    let att = match att {
        Some(a) => a,
        None => Tensor::zeros((), DType::F32, dev)?,
    };
    let hid = match hid {
        Some(h) => h,
        None => Tensor::zeros((), DType::F32, dev)?,
    };
    Ok(((&att + &hid)?, att, hid))
}

/// The reference's soft cross-entropy: mean over batch × classes of −p_t · log p_s at temperature T.
pub fn soft_cross_entropy(student_logits: &Tensor, teacher_logits: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(&(student_logits / temperature)?, D::Minus1)?;
    let p_t = candle_nn::ops::softmax(&(teacher_logits / temperature)?, D::Minus1)?;
    (p_t * log_p)?.neg()?.mean_all()
}

fn detach(o: ModelOutput) -> ModelOutput {
    ModelOutput {
        logits: o.logits.detach(),
        pooled: o.pooled.detach(),
        hidden_states: o.hidden_states.into_iter().map(|t| t.detach()).collect(),
        attention_scores: o.attention_scores.into_iter().map(|t| t.detach()).collect(),
    }
}

fn head_of(md: &ModelDir) -> HeadSpec {
    HeadSpec { label_names: md.config.label_names(), regression: md.config.is_regression() }
}

fn new_optimizer(md: &ModelDir, spec: &OptimSpec) -> Adam {
    Adam::new(sorted_vars(&md.varmap), spec.adam_config())
}

/// How a run executes (not part of the recipe: neither changes what is trained).
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// Stop once this many optimizer steps (stage 1 and 2 together) are done, saving a resume
    /// point (a time-boxed run; rerun the command to continue).
    pub stop_after: Option<u64>,
    /// Memory for the stage-1 teacher cache (`teacher_cache`); 0 disables it. A training set
    /// whose cache would exceed it runs the teacher every step.
    pub teacher_cache_bytes: u64,
}

/// Run (or resume) the recipe.
pub fn train(recipe: &Recipe, device: &Device, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let stop_after = opts.stop_after;
    recipe.validate().map_err(TrainError::Invalid)?;
    let out = &recipe.out;
    let state_dir = out.join("train_state");
    let state_file = state_dir.join("state.json");
    let resume: Option<DistillState> = if state_file.exists() {
        let text = std::fs::read_to_string(&state_file).map_err(io(&state_file))?;
        let st: DistillState = serde_json::from_str(&text)
            .map_err(|e| TrainError::Resume { path: state_file.clone(), msg: format!("unreadable state: {e}") })?;
        if st.recipe != *recipe {
            return Err(TrainError::Resume {
                path: state_file.clone(),
                msg: format!(
                    "this output directory holds a run with a different recipe (see {}); use another --out or remove it",
                    out.join("recipe.toml").display()
                ),
            });
        }
        Some(st)
    } else {
        None
    };

    let teacher = ModelDir::load(&recipe.teacher, None, recipe.seed, device)?;
    if teacher.config.is_regression() != recipe.task.is_regression() || teacher.model.num_labels != recipe.task.num_labels() {
        return Err(TrainError::Invalid(format!(
            "{}: the teacher's head has {} output(s) but task {} needs {}",
            recipe.teacher.join("config.json").display(),
            teacher.model.num_labels,
            recipe.task.name(),
            recipe.task.num_labels()
        )));
    }
    // The initialisation report is a function of the teacher and the student spec, so a resumed
    // run rebuilds the same one and train.json keeps it.
    let (mut student, map, report) = build_student(&teacher, &recipe.student, recipe.seed, device)?;
    if let Some(st) = &resume {
        // The student's latest weights live in the resume point.
        student = ModelDir::load(&state_dir, Some(&head_of(&student)), recipe.seed, device)?;
        eprintln!("resuming stage {} at step {} from {}", st.stage, st.step, state_dir.display());
    } else {
        eprintln!("student ({}+{}, {} layers): {}", recipe.student.hidden_act.name(), recipe.student.softmax_act.name(),
            student.config.num_hidden_layers, report.summary());
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    write_file_atomic(&out.join("recipe.toml"), recipe.to_toml().as_bytes())?;

    let encoder = TextEncoder::load(&recipe.teacher, recipe.max_seq_len, teacher.config.vocab_size)?;
    let t0 = Instant::now();
    let pick = |rows: Vec<crate::data::Example>, n: Option<usize>| match n {
        Some(n) => subsample(rows, n, recipe.sample_seed),
        None => rows,
    };
    let train_split = match &recipe.transfer_file {
        Some(f) => crate::data::glue::read_tsv(recipe.task, f, false, recipe.limit_train)?,
        None => load_split(recipe.task, &recipe.data, "train", recipe.limit_train)?,
    };
    let train_rows = encoder.encode(&pick(train_split, recipe.sample_train))?;
    let dev = encoder.encode(&pick(load_split(recipe.task, &recipe.data, "dev", recipe.limit_dev)?, recipe.sample_dev))?;
    if train_rows.is_empty() {
        return Err(TrainError::Invalid(format!("no training rows in {}", recipe.transfer_file.as_ref().unwrap_or(&recipe.data).display())));
    }
    eprintln!("{} train / {} dev rows tokenised in {:.1}s", train_rows.len(), dev.len(), t0.elapsed().as_secs_f64());

    let steps = [
        if recipe.has_stage1() {
            stage_steps(train_rows.len(), recipe.batch_size, recipe.stage1.as_ref().map_or(0.0, |s| s.epochs))
        } else {
            0
        },
        stage_steps(train_rows.len(), recipe.batch_size, recipe.stage2.epochs),
    ];
    let resumed = resume.is_some();
    let mut st = match resume {
        Some(st) => st,
        None => {
            let teacher_metrics = evaluate(&teacher, &dev, recipe, device)?;
            if let Some(m) = &teacher_metrics {
                eprintln!("teacher dev {} = {:.4}", recipe.task.primary_metric(), m.primary(recipe.task));
            }
            DistillState {
                recipe: recipe.clone(),
                stage: if steps[0] > 0 { 1 } else { 2 },
                step: 0,
                best_metric: None,
                best_step: None,
                best_metrics: None,
                teacher_metrics,
                seconds: [0.0; 2],
                examples: [0; 2],
                log: vec![],
                acc: [0.0; 4],
                acc_n: 0,
            }
        }
    };

    let optim_of = |stage: u8| -> &OptimSpec {
        if stage == 1 {
            &recipe.stage1.as_ref().expect("stage 1 runs only when configured").optimizer
        } else {
            &recipe.stage2.optimizer
        }
    };
    let mut opt = None;
    if st.stage <= 2 {
        let mut o = new_optimizer(&student, optim_of(st.stage));
        if resumed {
            let f = state_dir.join("optimizer.safetensors");
            let saved = candle_core::safetensors::load(&f, device)
                .map_err(|e| TrainError::Resume { path: f.clone(), msg: e.to_string() })?;
            o.load_state(|n| saved.get(n).cloned()).map_err(|e| TrainError::Resume { path: f.clone(), msg: e.to_string() })?;
        }
        opt = Some(o);
    }
    let steps_done_total = |st: &DistillState| -> u64 {
        match st.stage {
            1 => st.step,
            2 => steps[0] + st.step,
            _ => steps[0] + steps[1],
        }
    };
    let stop_at = stop_after.unwrap_or(u64::MAX);
    let lengths: Vec<usize> = train_rows.iter().map(|e| e.ids.len()).collect();
    let batches_per_epoch = train_rows.len().div_ceil(recipe.batch_size) as u64;
    let interactive = std::io::stderr().is_terminal();
    let heads = student.config.num_attention_heads;
    let hidden = student.config.hidden_size;
    let regression = recipe.task.is_regression();
    // Stage 2's weight average (recipe `stage2.ema`), created when stage 2 starts.
    let mut ema: Option<WeightEma> = None;

    'stages: while st.stage <= 2 && steps_done_total(&st) < stop_at {
        let stage = st.stage;
        let total = steps[stage as usize - 1];
        let spec = optim_of(stage).clone();
        let (teacher_dropout, log_every) = match stage {
            1 => {
                let s1 = recipe.stage1.as_ref().expect("stage 1 configured");
                (s1.teacher_dropout, s1.log_every)
            }
            _ => (recipe.stage2.teacher_dropout, recipe.stage2.eval_every),
        };
        let need_teacher = stage == 1 || recipe.stage2.objective == Objective::Distill && !regression;
        // Stage 2 needs only the teacher's logits; a deterministic teacher gives the same logits
        // every epoch, so with ≥ 1 epoch one batched pass over the training set is cheaper than
        // a teacher forward per step (and is recomputed identically on resume).
        let cached_logits: Option<Vec<Vec<f32>>> = if stage == 2 && need_teacher && !teacher_dropout && recipe.stage2.epochs >= 1.0 {
            let t = Instant::now();
            let rows = predict(&teacher.model, &train_rows, recipe.eval_batch_size, device, |_| {})?;
            eprintln!("teacher logits for {} training rows in {:.1}s", rows.len(), t.elapsed().as_secs_f64());
            Some(rows.into_iter().map(|r| r.logits).collect())
        } else {
            None
        };
        // Stage 1 with a deterministic teacher over more than one epoch: its targets are
        // computed once (cheaper than a forward per step from the second epoch on; rebuilt the
        // same way on resume).
        let stage1_cache = if stage == 1 && !teacher_dropout && total > batches_per_epoch && opts.teacher_cache_bytes > 0 {
            let need = TeacherCache::estimate_bytes(&train_rows, &map, teacher.config.hidden_size, teacher.config.num_attention_heads);
            if need <= opts.teacher_cache_bytes {
                let t = Instant::now();
                let c = TeacherCache::build(&teacher.model, &train_rows, &map, recipe.eval_batch_size, device)?;
                // Counted as stage-1 time: it replaces the teacher forwards of the steps.
                st.seconds[0] += t.elapsed().as_secs_f64();
                eprintln!(
                    "teacher stage-1 targets for {} training rows cached ({:.2} GiB) in {:.1}s",
                    train_rows.len(),
                    need as f64 / (1u64 << 30) as f64,
                    t.elapsed().as_secs_f64()
                );
                Some(c)
            } else {
                eprintln!(
                    "teacher stage-1 targets would need {:.2} GiB (budget {:.2} GiB, --teacher-cache-gib): the teacher runs every step",
                    need as f64 / (1u64 << 30) as f64,
                    opts.teacher_cache_bytes as f64 / (1u64 << 30) as f64
                );
                None
            }
        } else {
            None
        };
        if let (2, Some(spec)) = (stage, &recipe.stage2.ema) {
            ema = Some(if st.step > 0 {
                // Mid-stage 2 only on resume: the average continues from the resume point.
                let f = state_dir.join(EMA_FILE);
                let saved = candle_core::safetensors::load(&f, device)
                    .map_err(|e| TrainError::Resume { path: f.clone(), msg: e.to_string() })?;
                WeightEma::from_saved(&student.varmap, spec.decay, spec.every, &saved)
                    .map_err(|msg| TrainError::Resume { path: f.clone(), msg })?
            } else {
                WeightEma::new(&student.varmap, spec.decay, spec.every)?
            });
        }
        let pb = progress_bar(total, st.step);
        pb.set_prefix(format!("stage {stage}"));
        let mut window = Instant::now();
        let mut window_examples = 0u64;
        while st.step < total {
            let epoch = st.step / batches_per_epoch;
            let mut shuffle = step_rng(recipe.seed, PURPOSE_SHUFFLE + 16 * stage as u64, epoch);
            let order = train_order(&lengths, recipe.batch_size, &mut shuffle);
            let start = (st.step % batches_per_epoch) as usize;
            for positions in &order[start..] {
                if st.step >= total {
                    break;
                }
                let step_t = Instant::now();
                let items: Vec<&Encoded> = positions.iter().map(|&p| &train_rows[p]).collect();
                let batch = collate(&items, device)?;
                let gstep = (stage as u64) << 40 | st.step;
                let teacher_out = if let Some(cache) = &cached_logits {
                    let flat: Vec<f32> = positions.iter().flat_map(|&p| cache[p].iter().copied()).collect();
                    let logits = Tensor::from_vec(flat, (positions.len(), student.model.num_labels), device)?;
                    Some(ModelOutput { pooled: logits.clone(), logits, hidden_states: vec![], attention_scores: vec![] })
                } else if let Some(cache) = &stage1_cache {
                    let l = batch.input.attention_mask.dims2()?.1;
                    Some(cache.batch(positions, l, student.model.num_labels, device)?)
                } else if need_teacher {
                    let o = if teacher_dropout {
                        let mut r = step_rng(recipe.seed, PURPOSE_TEACHER_DROPOUT, gstep);
                        teacher.model.forward_with(&batch.input, &mut Mode::Train(&mut r), stage == 1)?
                    } else {
                        teacher.model.forward_with(&batch.input, &mut Mode::Eval, stage == 1)?
                    };
                    Some(detach(o))
                } else {
                    None
                };
                let mut rng = step_rng(recipe.seed, PURPOSE_DROPOUT, gstep);
                let s_out = student.model.forward_with(&batch.input, &mut Mode::Train(&mut rng), stage == 1)?;
                let (loss, terms) = if stage == 1 {
                    let masks = PadMasks::new(&batch.input.attention_mask)?;
                    let t = teacher_out.as_ref().expect("stage 1 runs the teacher");
                    let (l, a, h) = layerwise_loss(&s_out, t, &map, &masks, heads, hidden)?;
                    let (a, h) = (a.to_scalar::<f32>()? as f64, h.to_scalar::<f32>()? as f64);
                    (l, [a, h, 0.0])
                } else {
                    let l = match (&teacher_out, recipe.stage2.objective) {
                        (Some(t), Objective::Distill) => soft_cross_entropy(&s_out.logits, &t.logits, recipe.stage2.temperature)?,
                        _ => {
                            let labels = batch.labels.as_ref().ok_or_else(|| {
                                TrainError::Invalid(format!("unlabelled training row in {}", recipe.data.display()))
                            })?;
                            task_loss(&s_out.logits, labels, regression)?
                        }
                    };
                    let v = l.to_scalar::<f32>()? as f64;
                    (l, [0.0, 0.0, v])
                };
                let grads = loss.backward()?;
                let lr = spec.lr * spec.schedule.factor(st.step, total);
                opt.as_mut().expect("optimizer exists while training").step(&grads, lr)?;
                let l = loss.to_scalar::<f32>()? as f64;
                if !l.is_finite() {
                    return Err(TrainError::Invalid(format!(
                        "stage {stage} loss became {l} at step {}; lower the LR",
                        st.step
                    )));
                }
                st.acc[0] += l;
                for k in 0..3 {
                    st.acc[k + 1] += terms[k];
                }
                st.acc_n += 1;
                st.step += 1;
                if stage == 2 {
                    if let Some(e) = ema.as_mut() {
                        e.after_step(&student.varmap, st.step)?;
                    }
                }
                let si = stage as usize - 1;
                st.examples[si] += items.len() as u64;
                st.seconds[si] += step_t.elapsed().as_secs_f64();
                window_examples += items.len() as u64;
                let eps = window_examples as f64 / window.elapsed().as_secs_f64().max(1e-9);
                let n = st.acc_n.max(1) as f64;
                pb.set_position(st.step);
                pb.set_message(if stage == 1 {
                    format!("loss {:.4} (att {:.4} hid {:.4}) | {:.1} ex/s", st.acc[0] / n, st.acc[1] / n, st.acc[2] / n, eps)
                } else {
                    format!("loss {:.4} | {:.1} ex/s | lr {:.2e}", st.acc[0] / n, eps, lr)
                });
                if !interactive && st.step % 50 == 0 {
                    eprintln!("stage {stage} step {}/{total} loss {:.4} {:.1} ex/s", st.step, st.acc[0] / n, eps);
                }
                let checkpoint_due = st.step % log_every == 0 || st.step == total;
                if checkpoint_due {
                    // With a weight average, stage 2 evaluates, selects and saves the average;
                    // training continues from the live weights.
                    let live = match (stage, &ema) {
                        (2, Some(e)) => Some(e.swap_in(&student.varmap)?),
                        _ => None,
                    };
                    let metrics = if stage == 2 { evaluate(&student, &dev, recipe, device)? } else { None };
                    let value = metrics.as_ref().map(|m| m.primary(recipe.task));
                    st.log.push(LogRow {
                        stage,
                        step: st.step,
                        epoch: st.step as f64 / batches_per_epoch as f64,
                        lr,
                        loss: st.acc[0] / n,
                        att_loss: st.acc[1] / n,
                        hid_loss: st.acc[2] / n,
                        pred_loss: st.acc[3] / n,
                        dev_metric: value,
                        metrics: metrics.clone().unwrap_or_default(),
                        seconds: st.seconds[si],
                    });
                    let msg = match value {
                        Some(v) => format!(
                            "stage 2 step {}: loss {:.4}, dev {} {:.4}{}",
                            st.step,
                            st.acc[0] / n,
                            recipe.task.primary_metric(),
                            v,
                            if live.is_some() { " (weight average)" } else { "" }
                        ),
                        None => format!(
                            "stage {stage} step {}: loss {:.4} (att {:.4}, hid {:.4}, pred {:.4})",
                            st.step,
                            st.acc[0] / n,
                            st.acc[1] / n,
                            st.acc[2] / n,
                            st.acc[3] / n
                        ),
                    };
                    pb.println(&msg);
                    if !interactive {
                        eprintln!("{msg}");
                    }
                    st.acc = [0.0; 4];
                    st.acc_n = 0;
                    if stage == 2 {
                        let v = value.unwrap_or(f64::NAN);
                        let better = st.best_metric.is_none_or(|b| v > b) || (st.best_step.is_none() && st.step == total);
                        if better {
                            st.best_metric = v.is_finite().then_some(v);
                            st.best_step = Some(st.step);
                            st.best_metrics = metrics;
                            save_best(out, &student, &recipe.teacher)?;
                        }
                    }
                    if let Some(l) = live {
                        WeightEma::restore(&student.varmap, &l)?;
                    }
                    write_log_csv(&out.join("log.csv"), &st.log)?;
                    crate::train::plot::plot_run(&out.join("loss.png"), recipe.task.primary_metric(), &st.log);
                }
                if st.step == total {
                    // Stage change: the next stage starts from this student with a fresh optimizer.
                    if stage == 1 {
                        save_model(&out.join("stage1"), &student.varmap, &student.config, &recipe.teacher)?;
                    }
                    st.stage += 1;
                    st.step = 0;
                    // After stage 2 the finished optimizer is saved as is (a finished run never loads it).
                    if st.stage <= 2 {
                        opt = Some(new_optimizer(&student, optim_of(st.stage)));
                    }
                    save_state(&state_dir, &student, opt.as_ref().expect("optimizer exists"), &st, &recipe.teacher, ema.as_ref().map(|e| e.tensors()).as_ref())?;
                    pb.finish_and_clear();
                    continue 'stages;
                }
                if checkpoint_due || steps_done_total(&st) >= stop_at {
                    save_state(&state_dir, &student, opt.as_ref().expect("optimizer exists"), &st, &recipe.teacher, ema.as_ref().map(|e| e.tensors()).as_ref())?;
                }
                if steps_done_total(&st) >= stop_at {
                    pb.finish_and_clear();
                    break 'stages;
                }
            }
            window = Instant::now();
            window_examples = 0;
        }
    }

    let finished = st.stage > 2;
    let teacher_agreement = if finished && !dev.is_empty() && out.join("model.safetensors").exists() {
        let best = ModelDir::load(out, None, recipe.seed, device)?;
        agreement(&teacher, &best, &dev, recipe, device)?
    } else {
        None
    };
    let summary = TrainSummary {
        recipe: recipe.clone(),
        primary_metric: recipe.task.primary_metric().to_string(),
        teacher_metric: st.teacher_metrics.as_ref().map(|m| m.primary(recipe.task)),
        teacher_metrics: st.teacher_metrics.clone(),
        best_metric: st.best_metric,
        best_step: st.best_step,
        best_metrics: st.best_metrics.clone(),
        fraction_of_teacher: match (st.best_metric, st.teacher_metrics.as_ref()) {
            (Some(b), Some(t)) => Some(b / t.primary(recipe.task)),
            _ => None,
        },
        teacher_agreement,
        stage1: (steps[0] > 0).then(|| StageSummary {
            steps: steps[0],
            seconds: st.seconds[0],
            examples_per_second: st.examples[0] as f64 / st.seconds[0].max(1e-9),
        }),
        stage2: StageSummary {
            steps: steps[1],
            seconds: st.seconds[1],
            examples_per_second: st.examples[1] as f64 / st.seconds[1].max(1e-9),
        },
        student: report,
        resumed,
        finished,
    };
    write_file_atomic(&out.join("train.json"), serde_json::to_string_pretty(&summary).expect("summary serialises").as_bytes())?;
    Ok(summary)
}

/// Student-vs-teacher agreement on dev (see `TrainSummary::teacher_agreement`).
fn agreement(
    teacher: &ModelDir,
    student: &ModelDir,
    dev: &[Encoded],
    recipe: &Recipe,
    device: &Device,
) -> Result<Option<f64>, TrainError> {
    let t = predict(&teacher.model, dev, recipe.eval_batch_size, device, |_| {})?;
    let s = predict(&student.model, dev, recipe.eval_batch_size, device, |_| {})?;
    if t.is_empty() {
        return Ok(None);
    }
    Ok(Some(if recipe.task.is_regression() {
        let out = |rows: &[crate::eval::PredRow]| rows.iter().map(|r| r.logits[0] as f64).collect::<Vec<_>>();
        crate::eval::metrics::pearson(&out(&t), &out(&s))
    } else {
        t.iter().zip(&s).filter(|(a, b)| a.class() == b.class()).count() as f64 / t.len() as f64
    }))
}

fn evaluate(md: &ModelDir, dev: &[Encoded], recipe: &Recipe, device: &Device) -> Result<Option<Metrics>, TrainError> {
    if dev.is_empty() {
        return Ok(None);
    }
    let rows = predict(&md.model, dev, recipe.eval_batch_size, device, |_| {})?;
    Ok(score(recipe.task, &rows))
}

fn write_log_csv(path: &Path, log: &[LogRow]) -> Result<(), TrainError> {
    let mut s = String::from(
        "stage,step,epoch,lr,loss,att_loss,hid_loss,pred_loss,dev_metric,accuracy,f1,mcc,pearson,spearman,seconds\n",
    );
    let o = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    for r in log {
        let m = &r.metrics;
        s += &format!(
            "{},{},{:.4},{:.3e},{:.6},{:.6},{:.6},{:.6},{},{},{},{},{},{},{:.2}\n",
            r.stage,
            r.step,
            r.epoch,
            r.lr,
            r.loss,
            r.att_loss,
            r.hid_loss,
            r.pred_loss,
            o(r.dev_metric),
            o(m.accuracy),
            o(m.f1),
            o(m.mcc),
            o(m.pearson),
            o(m.spearman),
            r.seconds
        );
    }
    write_file_atomic(path, s.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bert::ModelInput;
    use crate::model::{BertConfig, HiddenAct, SoftmaxAct};
    use crate::train::recipe::{StudentInit, StudentSpec};

    fn tiny_pair() -> (ModelDir, ModelDir, LayerMap, ModelInput) {
        let dev = Device::Cpu;
        let mut cfg = BertConfig::tiny(4, 16, 2, 40);
        cfg.set_labels(&["a".into(), "b".into()], false);
        let teacher = ModelDir::random(cfg, 2, 3, &dev).unwrap();
        let spec = StudentSpec {
            hidden_act: HiddenAct::Quad,
            softmax_act: SoftmaxAct::TwoQuad,
            layers: Some(2),
            init: StudentInit::Teacher,
            softmax_2quad_c: None,
            from: None,
        };
        let (student, map, _) = build_student(&teacher, &spec, 3, &dev).unwrap();
        let input = ModelInput {
            input_ids: Tensor::new(&[[2u32, 5, 9, 3, 0, 0], [2, 7, 8, 11, 12, 3]], &dev).unwrap(),
            token_type_ids: Tensor::zeros((2, 6), DType::U32, &dev).unwrap(),
            attention_mask: Tensor::new(&[[1f32, 1., 1., 1., 0., 0.], [1., 1., 1., 1., 1., 1.]], &dev).unwrap(),
        };
        (teacher, student, map, input)
    }

    /// The layer-wise loss against an explicit loop over real positions only.
    #[test]
    fn layerwise_loss_matches_a_direct_computation() {
        let (teacher, student, map, input) = tiny_pair();
        let t = detach(teacher.model.forward_with(&input, &mut Mode::Eval, true).unwrap());
        let s = student.model.forward_with(&input, &mut Mode::Eval, true).unwrap();
        let masks = PadMasks::new(&input.attention_mask).unwrap();
        let (total, att, hid) = layerwise_loss(&s, &t, &map, &masks, 2, 16).unwrap();
        let lens = [4usize, 6];
        let mut want_att = 0.0f64;
        for i in 0..2 {
            let a = s.attention_scores[i].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = t.attention_scores[map.attention(i)].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (mut sum, mut n) = (0.0f64, 0.0f64);
            for (bi, &len) in lens.iter().enumerate() {
                for h in 0..2 {
                    for q in 0..len {
                        for k in 0..len {
                            let idx = ((bi * 2 + h) * 6 + q) * 6 + k;
                            sum += ((a[idx] - b[idx]) as f64).powi(2);
                            n += 1.0;
                        }
                    }
                }
            }
            want_att += sum / n;
        }
        let mut want_hid = 0.0f64;
        for j in 0..=2 {
            let a = s.hidden_states[j].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = t.hidden_states[map.hidden(j)].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (mut sum, mut n) = (0.0f64, 0.0f64);
            for (bi, &len) in lens.iter().enumerate() {
                for p in 0..len {
                    for d in 0..16 {
                        let idx = (bi * 6 + p) * 16 + d;
                        sum += ((a[idx] - b[idx]) as f64).powi(2);
                        n += 1.0;
                    }
                }
            }
            want_hid += sum / n;
        }
        let got = |x: &Tensor| x.to_scalar::<f32>().unwrap() as f64;
        assert!(want_att > 0.0 && want_hid > 0.0);
        assert!((got(&att) - want_att).abs() < 1e-4 * want_att, "{} vs {want_att}", got(&att));
        assert!((got(&hid) - want_hid).abs() < 1e-4 * want_hid, "{} vs {want_hid}", got(&hid));
        assert!((got(&total) - want_att - want_hid).abs() < 1e-4 * (want_att + want_hid));
    }

    #[test]
    fn soft_cross_entropy_is_the_reference_mean() {
        let dev = Device::Cpu;
        let s = Tensor::new(&[[1.0f32, -0.5, 0.2], [0.3, 0.1, 2.0]], &dev).unwrap();
        let t = Tensor::new(&[[0.2f32, 0.4, -1.0], [1.5, -0.3, 0.0]], &dev).unwrap();
        for temp in [1.0, 2.0] {
            let got = soft_cross_entropy(&s, &t, temp).unwrap().to_scalar::<f32>().unwrap() as f64;
            let (sv, tv) = (s.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
            let mut want = 0.0;
            for r in 0..2 {
                let ls: Vec<f64> = sv[r].iter().map(|&x| x as f64 / temp).collect();
                let lt: Vec<f64> = tv[r].iter().map(|&x| x as f64 / temp).collect();
                let zs = ls.iter().map(|x| x.exp()).sum::<f64>().ln();
                let zt: f64 = lt.iter().map(|x| x.exp()).sum();
                for c in 0..3 {
                    want -= (lt[c].exp() / zt) * (ls[c] - zs);
                }
            }
            want /= 6.0;
            assert!((got - want).abs() < 1e-6, "T={temp}: {got} vs {want}");
        }
    }

    /// Stage 1 trains every embedding and encoder tensor (pooler and classifier are not in its
    /// loss); stage 2 trains every tensor.
    #[test]
    fn every_trainable_tensor_gets_a_gradient() {
        let (teacher, student, map, input) = tiny_pair();
        let t = detach(teacher.model.forward_with(&input, &mut Mode::Eval, true).unwrap());
        let mut rng = step_rng(1, 2, 3);
        let s = student.model.forward_with(&input, &mut Mode::Train(&mut rng), true).unwrap();
        let masks = PadMasks::new(&input.attention_mask).unwrap();
        let (loss, _, _) = layerwise_loss(&s, &t, &map, &masks, 2, 16).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in sorted_vars(&student.varmap) {
            let stage1_trains = !(name.starts_with("bert.pooler") || name.starts_with("classifier"));
            let g = grads.get(var.as_tensor());
            let nz = g.map(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0).unwrap_or(false);
            assert_eq!(nz, stage1_trains, "stage 1 gradient of {name}");
        }
        // No gradient leaks into the teacher.
        for (name, var) in sorted_vars(&teacher.varmap) {
            assert!(grads.get(var.as_tensor()).is_none(), "teacher tensor {name} got a gradient");
        }
        let mut rng = step_rng(1, 2, 4);
        let s = student.model.forward_with(&input, &mut Mode::Train(&mut rng), false).unwrap();
        let loss = soft_cross_entropy(&s.logits, &t.logits, 1.0).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in sorted_vars(&student.varmap) {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no stage-2 gradient for {name}"));
            let sum = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            // The word-embedding rows of unused ids get zero gradient; the tensor as a whole must not.
            assert!(sum > 0.0, "zero stage-2 gradient for {name}");
        }
    }

    #[test]
    fn stage_steps_round_up() {
        assert_eq!(stage_steps(100, 32, 1.0), 4);
        assert_eq!(stage_steps(100, 32, 0.5), 2);
        assert_eq!(stage_steps(100, 32, 2.5), 10);
        assert_eq!(stage_steps(5, 32, 0.01), 1);
    }
}
