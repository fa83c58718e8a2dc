//! `kd finetune`: a pretrained BERT becomes a task teacher.
//!
//! The recipe is HF `run_glue.py`'s (MPCFormer spec §2.4 teacher recipe): AdamW, linear warmup
//! then linear decay, weight decay except bias/LayerNorm, global gradient clipping at 1.0,
//! dropout in training, dev evaluation at a fixed interval, best checkpoint kept (by the task's
//! GLUE metric). Batches are length-bucketed and dynamically padded.
//!
//! Output directory layout:
//! - `OUT/` itself is the best checkpoint: an HF directory (`config.json`, `model.safetensors`,
//!   tokenizer files) that transformers loads as `BertForSequenceClassification`;
//! - `OUT/train_state/`: the latest model, optimizer moments and `state.json`, written atomically
//!   at every evaluation; rerunning the same command resumes from it;
//! - `OUT/log.csv` (loss and dev metrics per evaluation) and `OUT/finetune.json` (summary).
//!
//! All randomness derives from the seed and the step, so a resumed run sees the same batches and
//! dropout masks as an uninterrupted one.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::batch::{collate, train_order, Encoded, TextEncoder};
use crate::data::{load_split, DataError, Task};
use crate::eval::{predict, score, task_loss, Metrics};
use crate::model::checkpoint::{
    save_dir_atomic, save_model, write_file_atomic, write_model_files, HeadSpec, TOKENIZER_FILES,
};
use crate::model::rng::step_rng;
use crate::model::{ModelDir, ModelError, Mode};
use crate::train::optim::{Adam, AdamConfig, Schedule};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path}: {msg}")]
    Resume { path: PathBuf, msg: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

const PURPOSE_SHUFFLE: u64 = 1;
const PURPOSE_DROPOUT: u64 = 2;

/// Everything that defines a fine-tuning run (saved with the run; a resume must match it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneArgs {
    pub model: PathBuf,
    pub task: Task,
    pub data: PathBuf,
    pub out: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub max_seq_len: usize,
    pub seed: u64,
    /// Evaluate (and checkpoint) every N optimizer steps; 0 = at the end of each epoch only.
    pub eval_every: u64,
    pub eval_batch_size: usize,
    pub limit_train: Option<usize>,
    pub limit_dev: Option<usize>,
    /// Seeded random subsets (after the limits), for files sorted by label (IMDb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_dev: Option<usize>,
    #[serde(default)]
    pub sample_seed: u64,
}

/// One evaluation in the run log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRow {
    pub step: u64,
    pub epoch: f64,
    pub lr: f64,
    pub train_loss: f64,
    pub dev_metric: f64,
    pub metrics: Metrics,
    pub train_seconds: f64,
}

/// Saved progress (`train_state/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub args: FinetuneArgs,
    pub step: u64,
    pub total_steps: u64,
    pub best_metric: Option<f64>,
    pub best_step: Option<u64>,
    pub train_seconds: f64,
    pub examples_seen: u64,
    pub log: Vec<LogRow>,
    /// Loss accumulated since the last evaluation (so a resumed run logs the same averages).
    #[serde(default)]
    pub loss_sum: f64,
    #[serde(default)]
    pub loss_n: u64,
}

/// What `finetune.json` holds at the end.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneSummary {
    pub args: FinetuneArgs,
    pub primary_metric: String,
    pub best_metric: Option<f64>,
    pub best_step: Option<u64>,
    pub best_metrics: Option<Metrics>,
    pub total_steps: u64,
    pub train_seconds: f64,
    pub train_examples_per_second: f64,
    pub resumed_from_step: Option<u64>,
    pub log: Vec<LogRow>,
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}

impl FinetuneArgs {
    fn validate(&self) -> Result<(), TrainError> {
        if self.epochs == 0 || self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(TrainError::Invalid("epochs, batch size and eval batch size must be ≥ 1".into()));
        }
        if self.lr.is_nan() || self.lr <= 0.0 || !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(TrainError::Invalid(format!(
                "lr must be > 0 (got {}) and warmup ratio in [0, 1) (got {})",
                self.lr, self.warmup_ratio
            )));
        }
        Ok(())
    }
}

fn head_for(task: Task) -> HeadSpec {
    HeadSpec { label_names: task.label_names(), regression: task.is_regression() }
}

/// Fine-tune; returns the summary (also written to `OUT/finetune.json`).
///
/// `stop_after`: checkpoint and return once this many optimizer steps are done in total (a
/// time-boxed run; rerunning the same command continues it).
pub fn finetune(args: &FinetuneArgs, device: &Device, stop_after: Option<u64>) -> Result<FinetuneSummary, TrainError> {
    args.validate()?;
    let state_dir = args.out.join("train_state");
    let state_file = state_dir.join("state.json");
    let resume: Option<RunState> = if state_file.exists() {
        let text = std::fs::read_to_string(&state_file).map_err(io(&state_file))?;
        let st: RunState = serde_json::from_str(&text)
            .map_err(|e| TrainError::Resume { path: state_file.clone(), msg: format!("unreadable state: {e}") })?;
        if st.args != *args {
            return Err(TrainError::Resume {
                path: state_file.clone(),
                msg: format!(
                    "this output directory holds a run with different settings ({}); use another --out or remove it",
                    serde_json::to_string(&st.args).unwrap_or_default()
                ),
            });
        }
        Some(st)
    } else {
        None
    };

    let head = head_for(args.task);
    let load_from = if resume.is_some() { state_dir.clone() } else { args.model.clone() };
    let md = ModelDir::load(&load_from, Some(&head), args.seed, device)?;
    eprintln!("model {}: {}", load_from.display(), md.report.summary());
    let encoder = TextEncoder::load(&args.model, args.max_seq_len, md.config.vocab_size)?;

    let t0 = Instant::now();
    let pick = |rows: Vec<crate::data::Example>, n: Option<usize>| match n {
        Some(n) => crate::data::subsample(rows, n, args.sample_seed),
        None => rows,
    };
    let train = encoder.encode(&pick(load_split(args.task, &args.data, "train", args.limit_train)?, args.sample_train))?;
    let dev = encoder.encode(&pick(load_split(args.task, &args.data, "dev", args.limit_dev)?, args.sample_dev))?;
    if train.is_empty() {
        return Err(TrainError::Invalid(format!("no training rows in {}", args.data.display())));
    }
    eprintln!(
        "{} train / {} dev rows tokenised in {:.1}s (max_seq_len {})",
        train.len(),
        dev.len(),
        t0.elapsed().as_secs_f64(),
        args.max_seq_len
    );

    let vars = crate::model::checkpoint::sorted_vars(&md.varmap);
    let mut cfg = AdamConfig::adamw();
    cfg.weight_decay = args.weight_decay;
    cfg.max_grad_norm = args.max_grad_norm;
    let mut opt = Adam::new(vars, cfg);
    let schedule = Schedule::WarmupLinear { warmup: args.warmup_ratio };
    let batches_per_epoch = train.len().div_ceil(args.batch_size) as u64;
    let total_steps = batches_per_epoch * args.epochs as u64;

    let mut st = match resume {
        Some(st) => {
            let opt_file = state_dir.join("optimizer.safetensors");
            let saved = candle_core::safetensors::load(&opt_file, device)
                .map_err(|e| TrainError::Resume { path: opt_file.clone(), msg: e.to_string() })?;
            opt.load_state(|n| saved.get(n).cloned())
                .map_err(|e| TrainError::Resume { path: opt_file.clone(), msg: e.to_string() })?;
            eprintln!("resuming at step {}/{} from {}", st.step, st.total_steps, state_dir.display());
            st
        }
        None => RunState {
            args: args.clone(),
            step: 0,
            total_steps,
            best_metric: None,
            best_step: None,
            train_seconds: 0.0,
            examples_seen: 0,
            log: vec![],
            loss_sum: 0.0,
            loss_n: 0,
        },
    };
    let resumed_from = (st.step > 0).then_some(st.step);
    let lengths: Vec<usize> = train.iter().map(|e| e.ids.len()).collect();
    let pb = progress_bar(total_steps, st.step);
    let interactive = std::io::stderr().is_terminal();
    let (mut loss_sum, mut loss_n) = (st.loss_sum, st.loss_n);
    let mut window = Instant::now();
    let mut window_examples = 0u64;

    let stop_at = stop_after.unwrap_or(total_steps).min(total_steps);
    'outer: while st.step < stop_at {
        let epoch = st.step / batches_per_epoch;
        let mut shuffle = step_rng(args.seed, PURPOSE_SHUFFLE, epoch);
        let order = train_order(&lengths, args.batch_size, &mut shuffle);
        let start = (st.step % batches_per_epoch) as usize;
        for positions in &order[start..] {
            let step_t = Instant::now();
            let items: Vec<&Encoded> = positions.iter().map(|&p| &train[p]).collect();
            let batch = collate(&items, device)?;
            let labels = batch.labels.as_ref().ok_or_else(|| {
                TrainError::Invalid(format!("unlabelled training row in {}", args.data.display()))
            })?;
            let mut rng = step_rng(args.seed, PURPOSE_DROPOUT, st.step);
            let out = md.model.forward(&batch.input, &mut Mode::Train(&mut rng))?;
            let loss = task_loss(&out.logits, labels, head.regression)?;
            let grads = loss.backward()?;
            let lr = args.lr * schedule.factor(st.step, total_steps);
            opt.step(&grads, lr)?;
            let l = loss.to_scalar::<f32>()? as f64;
            if !l.is_finite() {
                return Err(TrainError::Invalid(format!("loss became {l} at step {}; lower the LR", st.step)));
            }
            loss_sum += l;
            loss_n += 1;
            st.step += 1;
            st.examples_seen += items.len() as u64;
            st.train_seconds += step_t.elapsed().as_secs_f64();
            window_examples += items.len() as u64;
            let eps = window_examples as f64 / window.elapsed().as_secs_f64().max(1e-9);
            pb.set_position(st.step);
            pb.set_message(format!("loss {:.4} | {:.1} ex/s | lr {:.2e}", loss_sum / loss_n as f64, eps, lr));
            if !interactive && st.step % 50 == 0 {
                eprintln!(
                    "step {}/{} loss {:.4} {:.1} ex/s",
                    st.step,
                    total_steps,
                    loss_sum / loss_n as f64,
                    eps
                );
            }
            let end_of_epoch = st.step % batches_per_epoch == 0;
            let due = args.eval_every > 0 && st.step % args.eval_every == 0;
            if !(end_of_epoch || due || st.step == total_steps) && st.step == stop_at {
                // A time-boxed stop between evaluation points: save the resume point only, so
                // the run's evaluations (and best-checkpoint choice) match an uninterrupted one.
                (st.loss_sum, st.loss_n) = (loss_sum, loss_n);
                save_state(&state_dir, &md, &opt, &st, &args.model, None)?;
                break 'outer;
            }
            if end_of_epoch || due || st.step == total_steps {
                let metrics = evaluate(&md, &dev, args, device)?;
                let value = metrics.as_ref().map(|m| m.primary(args.task)).unwrap_or(f64::NAN);
                st.log.push(LogRow {
                    step: st.step,
                    epoch: st.step as f64 / batches_per_epoch as f64,
                    lr,
                    train_loss: loss_sum / loss_n.max(1) as f64,
                    dev_metric: value,
                    metrics: metrics.clone().unwrap_or_default(),
                    train_seconds: st.train_seconds,
                });
                let msg = format!(
                    "step {} epoch {:.2}: train loss {:.4}, dev {} {:.4}",
                    st.step,
                    st.step as f64 / batches_per_epoch as f64,
                    loss_sum / loss_n.max(1) as f64,
                    args.task.primary_metric(),
                    value
                );
                pb.println(&msg);
                if !interactive {
                    eprintln!("{msg}");
                }
                (loss_sum, loss_n) = (0.0, 0);
                (st.loss_sum, st.loss_n) = (0.0, 0);
                if st.best_metric.is_none_or(|b| value > b) || (dev.is_empty() && st.step == total_steps) {
                    st.best_metric = value.is_finite().then_some(value);
                    st.best_step = Some(st.step);
                    save_best(&args.out, &md, &args.model)?;
                }
                save_state(&state_dir, &md, &opt, &st, &args.model, None)?;
                write_log_csv(&args.out.join("log.csv"), &st.log)?;
                window = Instant::now();
                window_examples = 0;
            }
            if st.step == stop_at {
                break 'outer;
            }
        }
    }
    pb.finish_and_clear();
    let best_metrics = st.best_step.and_then(|b| st.log.iter().find(|r| r.step == b)).map(|r| r.metrics.clone());
    let summary = FinetuneSummary {
        args: args.clone(),
        primary_metric: args.task.primary_metric().to_string(),
        best_metric: st.best_metric,
        best_step: st.best_step,
        best_metrics,
        total_steps,
        train_seconds: st.train_seconds,
        train_examples_per_second: st.examples_seen as f64 / st.train_seconds.max(1e-9),
        resumed_from_step: resumed_from,
        log: st.log.clone(),
    };
    let path = args.out.join("finetune.json");
    write_file_atomic(&path, serde_json::to_string_pretty(&summary).expect("summary serialises").as_bytes())?;
    Ok(summary)
}

fn evaluate(md: &ModelDir, dev: &[Encoded], args: &FinetuneArgs, device: &Device) -> Result<Option<Metrics>, TrainError> {
    if dev.is_empty() {
        return Ok(None);
    }
    let rows = predict(&md.model, dev, args.eval_batch_size, device, |_| {})?;
    Ok(score(args.task, &rows))
}

pub(crate) fn save_best(out: &Path, md: &ModelDir, tokenizer_src: &Path) -> Result<(), TrainError> {
    // OUT also holds train_state/ and logs, so the best model's files are replaced one by one,
    // each atomically (weights last, so a reader never pairs new weights with an old config).
    std::fs::create_dir_all(out).map_err(io(out))?;
    write_file_atomic(&out.join("config.json"), md.config.to_json_pretty().as_bytes())?;
    for f in TOKENIZER_FILES {
        let src = tokenizer_src.join(f);
        if src.exists() {
            let bytes = std::fs::read(&src).map_err(io(&src))?;
            write_file_atomic(&out.join(f), &bytes)?;
        }
    }
    let tmp = out.join(".model.safetensors.tmp");
    crate::model::checkpoint::save_tensors(&md.varmap, &tmp)?;
    let dst = out.join("model.safetensors");
    std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
    Ok(())
}

/// The resume point: live weights, optimizer state, `state.json` and, when stage 2 averages
/// weights, the average (`ema.safetensors`), all replaced together.
pub(crate) fn save_state<S: Serialize>(
    dir: &Path,
    md: &ModelDir,
    opt: &Adam,
    st: &S,
    tokenizer_src: &Path,
    ema: Option<&std::collections::HashMap<String, Tensor>>,
) -> Result<(), TrainError> {
    save_dir_atomic(dir, |tmp| {
        write_model_files(tmp, &md.varmap, &md.config, tokenizer_src)?;
        let tensors: std::collections::HashMap<String, Tensor> = opt.state_tensors()?.into_iter().collect();
        candle_core::safetensors::save(&tensors, tmp.join("optimizer.safetensors"))?;
        if let Some(avg) = ema {
            candle_core::safetensors::save(avg, tmp.join(crate::train::ema::EMA_FILE))?;
        }
        let p = tmp.join("state.json");
        std::fs::write(&p, serde_json::to_string_pretty(st).expect("state serialises"))
            .map_err(|source| ModelError::Io { path: p.clone(), source })?;
        Ok(())
    })?;
    Ok(())
}

fn write_log_csv(path: &Path, log: &[LogRow]) -> Result<(), TrainError> {
    let mut s = String::from("step,epoch,lr,train_loss,dev_metric,accuracy,f1,mcc,pearson,spearman,train_seconds\n");
    let o = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    for r in log {
        let m = &r.metrics;
        s += &format!(
            "{},{:.4},{:.3e},{:.6},{:.6},{},{},{},{},{},{:.2}\n",
            r.step,
            r.epoch,
            r.lr,
            r.train_loss,
            r.dev_metric,
            o(m.accuracy),
            o(m.f1),
            o(m.mcc),
            o(m.pearson),
            o(m.spearman),
            r.train_seconds
        );
    }
    write_file_atomic(path, s.as_bytes())?;
    Ok(())
}

pub(crate) fn progress_bar(total: u64, pos: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps | {msg} | ETA {eta}")
            .expect("static template is valid"),
    );
    pb.set_position(pos);
    pb
}

/// Save an HF model directory (used by callers that build models outside fine-tuning).
pub fn export(dir: &Path, md: &ModelDir, tokenizer_src: &Path) -> Result<(), TrainError> {
    save_model(dir, &md.varmap, &md.config, tokenizer_src)?;
    Ok(())
}
