//! Distillation recipes (`recipes/*.toml`): everything that defines a `kd train` run.
//!
//! A recipe names the task, the teacher, the student (approximations, depth, initialisation) and
//! the two stages of MPCFormer's distillation (spec §2): stage 1, layer-wise distillation with a
//! constant LR; stage 2, prediction-layer distillation with warmup-linear LR and best-dev
//! selection. The optimiser of each stage is explicit (BertAdam as in the reference, or AdamW).
//! Unknown keys are errors, so a typo never silently falls back to a default.
//!
//! Paths may start with `$KD_ASSETS` (expanded from the environment, default `../shared`).
//! `--set key.path=value` overrides apply to the TOML document before it is checked, so every
//! field can be overridden from the command line; the resolved recipe is saved with the run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Task;
use crate::model::{HiddenAct, SoftmaxAct};
use crate::train::optim::{AdamConfig, AdamKind, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("--set {0}: expected KEY=VALUE with a dotted key, e.g. stage1.epochs=2")]
    BadOverride(String),
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

/// A complete `kd train` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub task: Task,
    /// The fine-tuned teacher (HF directory, GeLU + softmax).
    pub teacher: PathBuf,
    /// The task's data directory (GLUE layout, or IMDb).
    pub data: PathBuf,
    /// Distill on this file instead of DATA's train split: a GLUE task's train-format file such
    /// as `kd augment` writes. Its labels are not trusted (variants copy their source's), so
    /// both stages must take their targets from the teacher: stage 2 `distill` on a
    /// classification task. Dev evaluation still reads DATA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_file: Option<PathBuf>,
    /// Output directory: the best student checkpoint, logs, resume state.
    pub out: PathBuf,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_max_seq_len")]
    pub max_seq_len: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_eval_batch_size")]
    pub eval_batch_size: usize,
    /// Keep only the first N training rows (file order), e.g. for a time-boxed run.
    #[serde(default)]
    pub limit_train: Option<usize>,
    /// Keep only the first N dev rows.
    #[serde(default)]
    pub limit_dev: Option<usize>,
    /// A seeded random subset of N training rows (after `limit_train`); use this, not a
    /// limit, on files sorted by label such as IMDb's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_dev: Option<usize>,
    /// Seed of the subsets (fixed apart from `seed`, so every run sees the same rows).
    #[serde(default)]
    pub sample_seed: u64,
    pub student: StudentSpec,
    /// Layer-wise distillation; absent (or 0 epochs) skips it, as the baselines do.
    #[serde(default)]
    pub stage1: Option<Stage1>,
    pub stage2: Stage2,
}

fn default_seed() -> u64 {
    42
}
fn default_max_seq_len() -> usize {
    128
}
fn default_batch_size() -> usize {
    32
}
fn default_eval_batch_size() -> usize {
    64
}

/// Where the student's weights come from (MPCFormer's "p").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudentInit {
    /// Copy the teacher's tensors (mapped layers for a shallower student).
    Teacher,
    /// BERT init (normal(0, 0.02), zero bias, unit LayerNorm), seeded: the "w/o p" ablation.
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentSpec {
    pub hidden_act: HiddenAct,
    pub softmax_act: SoftmaxAct,
    /// Encoder depth; must divide the teacher's. Default: the teacher's depth.
    #[serde(default)]
    pub layers: Option<usize>,
    #[serde(default = "default_init")]
    pub init: StudentInit,
    /// The 2Quad shift c (default: the teacher config's, else 5).
    #[serde(default)]
    pub softmax_2quad_c: Option<f64>,
    /// Start from this student checkpoint's weights instead of the teacher's, e.g. an earlier
    /// run's `OUT/stage1/` in a recipe without `[stage1]`, to try stage-2 settings without repeating
    /// stage 1. It must have the student's shape and approximations; every tensor comes from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PathBuf>,
}

fn default_init() -> StudentInit {
    StudentInit::Teacher
}

/// Optimiser and LR schedule of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSpec {
    /// `bertadam` (the reference's: no bias correction, eps 1e-6, per-tensor clipping) or `adamw`.
    pub kind: AdamKind,
    pub lr: f64,
    pub schedule: Schedule,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Gradient clipping (per tensor for BertAdam, global for AdamW); ≤ 0 disables it.
    #[serde(default = "default_clip")]
    pub max_grad_norm: f64,
}

fn default_wd() -> f64 {
    0.01
}
fn default_clip() -> f64 {
    1.0
}

impl OptimSpec {
    pub fn adam_config(&self) -> AdamConfig {
        let mut c = match self.kind {
            AdamKind::AdamW => AdamConfig::adamw(),
            AdamKind::BertAdam => AdamConfig::bert_adam(),
        };
        c.weight_decay = self.weight_decay;
        c.max_grad_norm = self.max_grad_norm;
        c
    }
}

/// Stage 1: MSE on mapped attention scores + MSE on mapped hidden states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage1 {
    /// Epochs over the training set (fractions allowed: a CPU budget rarely fits the paper's).
    pub epochs: f64,
    pub optimizer: OptimSpec,
    /// Run the teacher with dropout (the reference code's quirk); default: deterministic teacher.
    #[serde(default)]
    pub teacher_dropout: bool,
    /// Log the running loss terms every N steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
}

fn default_log_every() -> u64 {
    50
}

/// What stage 2 optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Soft cross-entropy against the teacher's logits (STS-B: MSE against the gold score).
    Distill,
    /// The task loss on gold labels only (the "w/o d" baselines).
    Labels,
}

/// Stage 2: prediction-layer distillation (or the label-only baseline), best dev checkpoint kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage2 {
    pub objective: Objective,
    pub epochs: f64,
    pub optimizer: OptimSpec,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Evaluate on dev every N optimizer steps (and at the end).
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    #[serde(default)]
    pub teacher_dropout: bool,
    /// Keep an exponential moving average of the student's weights and evaluate (and select,
    /// and save) that average instead of the raw weights. Unset: the raw weights, as the paper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<EmaSpec>,
}

/// Stage-2 weight averaging: every `every` optimizer steps `avg = decay·avg + (1 − decay)·w`,
/// starting from the weights stage 2 starts with. The average's half-life is
/// `every · ln 2 / (1 − decay)` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaSpec {
    pub decay: f64,
    #[serde(default = "default_ema_every")]
    pub every: u64,
}

fn default_ema_every() -> u64 {
    1
}

fn default_temperature() -> f64 {
    1.0
}
fn default_eval_every() -> u64 {
    100
}

/// Expand a leading `$KD_ASSETS` / `${KD_ASSETS}` in a path.
pub fn expand_assets(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    for prefix in ["${KD_ASSETS}", "$KD_ASSETS"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            let root = std::env::var_os("KD_ASSETS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("../shared"));
            return PathBuf::from(format!("{}{}", root.to_string_lossy(), rest));
        }
    }
    p.to_path_buf()
}

/// Apply one `key.path=value` override to a TOML document. The value is parsed as TOML
/// (`2`, `1e-5`, `true`, `"quad"`, `{ kind = "constant" }`); a bare word is taken as a string.
pub fn apply_override(doc: &mut toml::Table, spec: &str) -> Result<(), RecipeError> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| RecipeError::BadOverride(spec.to_string()))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|k| k.is_empty()) {
        return Err(RecipeError::BadOverride(spec.to_string()));
    }
    let raw = raw.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed table has v"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = doc;
    for p in &parts[..parts.len() - 1] {
        let entry = table.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| RecipeError::BadOverride(format!("{spec} ({p} is not a table)")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

impl Recipe {
    /// Read a recipe file, apply `--set` overrides, check it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io { path: path.to_path_buf(), source })?;
        let mut doc: toml::Table =
            toml::from_str(&text).map_err(|e| RecipeError::Parse { path: path.to_path_buf(), msg: e.to_string() })?;
        for o in overrides {
            apply_override(&mut doc, o)?;
        }
        let mut r: Recipe = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| RecipeError::Parse { path: path.to_path_buf(), msg: e.to_string() })?;
        r.teacher = expand_assets(&r.teacher);
        r.data = expand_assets(&r.data);
        r.transfer_file = r.transfer_file.as_deref().map(expand_assets);
        r.student.from = r.student.from.as_deref().map(expand_assets);
        r.validate().map_err(|msg| RecipeError::Invalid { path: path.to_path_buf(), msg })?;
        Ok(r)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err("batch_size and eval_batch_size must be ≥ 1".into());
        }
        if self.max_seq_len < 3 {
            return Err(format!("max_seq_len {} is too small (need ≥ 3)", self.max_seq_len));
        }
        if self.student.layers == Some(0) {
            return Err("student.layers must be ≥ 1".into());
        }
        if self.student.from.is_some() && self.student.init == StudentInit::Random {
            return Err("student.from and student.init = \"random\" exclude each other (the weights come from one place)".into());
        }
        let check = |name: &str, epochs: f64, o: &OptimSpec| -> Result<(), String> {
            if !(epochs.is_finite() && epochs >= 0.0) {
                return Err(format!("{name}.epochs must be ≥ 0 (got {epochs})"));
            }
            if !(o.lr.is_finite() && o.lr > 0.0) {
                return Err(format!("{name}.optimizer.lr must be > 0 (got {})", o.lr));
            }
            if let Schedule::WarmupLinear { warmup } | Schedule::BertWarmupLinear { warmup } = o.schedule {
                if !(0.0..1.0).contains(&warmup) {
                    return Err(format!("{name}.optimizer.schedule.warmup must be in [0, 1) (got {warmup})"));
                }
            }
            if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
                return Err(format!("{name}.optimizer.weight_decay must be ≥ 0"));
            }
            Ok(())
        };
        if let Some(s1) = &self.stage1 {
            check("stage1", s1.epochs, &s1.optimizer)?;
            if s1.log_every == 0 {
                return Err("stage1.log_every must be ≥ 1".into());
            }
        }
        check("stage2", self.stage2.epochs, &self.stage2.optimizer)?;
        if self.stage2.epochs <= 0.0 {
            return Err("stage2.epochs must be > 0 (stage 2 produces the selected checkpoint)".into());
        }
        if !(self.stage2.temperature.is_finite() && self.stage2.temperature > 0.0) {
            return Err(format!("stage2.temperature must be > 0 (got {})", self.stage2.temperature));
        }
        if self.stage2.eval_every == 0 {
            return Err("stage2.eval_every must be ≥ 1".into());
        }
        if let Some(e) = &self.stage2.ema {
            if !(e.decay > 0.0 && e.decay < 1.0) {
                return Err(format!("stage2.ema.decay must be in (0, 1) (got {})", e.decay));
            }
            if e.every == 0 {
                return Err("stage2.ema.every must be ≥ 1".into());
            }
        }
        if self.transfer_file.is_some() {
            if self.task == Task::Imdb {
                return Err("transfer_file: IMDb reads its own directory layout, not a GLUE train file".into());
            }
            if self.stage2.objective == Objective::Labels || self.task.is_regression() {
                return Err(format!(
                    "transfer_file: stage 2 would train on its labels ({}), which are copies from the source rows, not gold",
                    if self.task.is_regression() { "STS-B's distill objective is MSE against the gold score" } else { "objective = \"labels\"" }
                ));
            }
        }
        Ok(())
    }

    /// Whether stage 1 runs at all.
    pub fn has_stage1(&self) -> bool {
        self.stage1.as_ref().is_some_and(|s| s.epochs > 0.0)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a recipe serialises to TOML")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
task = "mrpc"
teacher = "checkpoints/teachers/mrpc"
data = "$KD_ASSETS/data/glue/MRPC"
out = "checkpoints/students/x"

[student]
hidden_act = "quad"
softmax_act = "2quad"

[stage1]
epochs = 2
optimizer = { kind = "bertadam", lr = 5e-5, schedule = { kind = "constant" } }

[stage2]
objective = "distill"
epochs = 1.5
optimizer = { kind = "bertadam", lr = 1e-5, schedule = { kind = "bert_warmup_linear", warmup = 0.1 } }
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn parses_defaults_and_overrides() {
        let (_d, p) = write(BASE);
        let r = Recipe::load(&p, &["stage1.epochs=3".into(), "student.layers=3".into(), "stage2.objective=labels".into()])
            .unwrap();
        assert_eq!(r.seed, 42);
        assert_eq!(r.batch_size, 32);
        assert_eq!(r.stage1.as_ref().unwrap().epochs, 3.0);
        assert_eq!(r.student.layers, Some(3));
        assert_eq!(r.student.init, StudentInit::Teacher);
        assert_eq!(r.stage2.objective, Objective::Labels);
        assert_eq!(r.stage2.temperature, 1.0);
        assert!(!r.data.to_string_lossy().contains("KD_ASSETS"));
        // The resolved recipe round-trips.
        let again: Recipe = toml::from_str(&r.to_toml()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn unknown_and_invalid_fields_are_errors() {
        let (_d, p) = write(&BASE.replace("softmax_act = \"2quad\"", "softmax_act = \"2quad\"\nsoftmax = 1"));
        let e = Recipe::load(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("r.toml") && e.contains("softmax"), "{e}");
        let (_d, p) = write(BASE);
        let e = Recipe::load(&p, &["stage2.optimizer.lr=0".into()]).unwrap_err().to_string();
        assert!(e.contains("stage2.optimizer.lr"), "{e}");
        let e = Recipe::load(&p, &["student.hidden_act=swish".into()]).unwrap_err().to_string();
        assert!(e.contains("swish"), "{e}");
        assert!(Recipe::load(&p, &["noequals".into()]).is_err());
    }

    #[test]
    fn stage2_ema_parses_defaults_and_is_validated() {
        let with = |ema: &str| BASE.replace("epochs = 1.5\n", &format!("epochs = 1.5\n{ema}\n"));
        let (_d, p) = write(BASE);
        assert_eq!(Recipe::load(&p, &[]).unwrap().stage2.ema, None);
        let (_d, p) = write(&with("ema = { decay = 0.99 }"));
        let r = Recipe::load(&p, &[]).unwrap();
        assert_eq!(r.stage2.ema, Some(EmaSpec { decay: 0.99, every: 1 }));
        let again: Recipe = toml::from_str(&r.to_toml()).unwrap();
        assert_eq!(again, r);
        for (bad, field) in [
            ("ema = { decay = 1.0 }", "stage2.ema.decay"),
            ("ema = { decay = 0.0 }", "stage2.ema.decay"),
            ("ema = { decay = 0.9, every = 0 }", "stage2.ema.every"),
            ("ema = { decay = 0.9, evry = 2 }", "evry"),
        ] {
            let (_d, p) = write(&with(bad));
            let e = Recipe::load(&p, &[]).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    /// The committed recipes are what users run: each must load and validate, name its task in
    /// its file name, and (except the demo) write to `checkpoints/students/<file stem>`, the
    /// layout `scripts/distill_runs.sh` and `scripts/distill_table.py` read.
    #[test]
    fn every_committed_recipe_loads_and_follows_the_naming() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            let r = Recipe::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            let task = r.task.name();
            assert!(stem.starts_with(&format!("{task}-")), "{stem}: task {task}");
            if stem != "sst2-demo" {
                assert_eq!(r.out, Path::new("checkpoints/students").join(&stem), "{stem}");
                assert_eq!(r.teacher, Path::new("checkpoints/teachers").join(&task), "{stem}");
            }
            n += 1;
        }
        assert!(n >= 20, "found only {n} recipes in {}", dir.display());
    }
}
