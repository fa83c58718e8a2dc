//! HF-format model directories: load (`config.json` + `model.safetensors`) and atomic save.
//!
//! Tensor names may come with or without the `bert.` prefix (a bare `BertModel` such as
//! all-MiniLM-L6-v2, or a `BertForSequenceClassification`); non-float tensors such as
//! `embeddings.position_ids` are skipped, and pretraining heads (`cls.*`) are reported unused.
//! Anything the file lacks outside the backbone (pooler, classifier) is freshly initialised with
//! BERT's init (N(0, initializer_range) weights, zero biases, unit LayerNorm), from a seed. Saved
//! directories use HF's names (`bert.…`, `classifier.…`) and load unchanged in transformers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;

use super::bert::BertForSequenceClassification;
use super::config::BertConfig;
use super::rng::randn;
use super::{ModelError, Result};

/// Tokenizer and metadata files copied along with a checkpoint.
pub const TOKENIZER_FILES: [&str; 4] =
    ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"];

/// What happened to each parameter while loading.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    /// Parameters the file lacks (or had with another head shape): freshly initialised.
    pub initialised: Vec<String>,
    /// Tensors in the file the model does not use.
    pub unused: Vec<String>,
}

impl LoadReport {
    pub fn summary(&self) -> String {
        let mut s = format!("{} tensors loaded", self.loaded.len());
        if !self.initialised.is_empty() {
            s += &format!("; newly initialised: {}", self.initialised.join(", "));
        }
        if !self.unused.is_empty() {
            s += &format!("; unused in file: {}", self.unused.join(", "));
        }
        s
    }
}

/// A model directory on disk and the model built from it.
pub struct ModelDir {
    pub dir: PathBuf,
    pub config: BertConfig,
    pub varmap: VarMap,
    pub model: BertForSequenceClassification,
    pub report: LoadReport,
}

/// How the classification head should look after loading.
#[derive(Debug, Clone)]
pub struct HeadSpec {
    pub label_names: Vec<String>,
    pub regression: bool,
}

fn canonical(name: &str) -> Option<String> {
    if name.starts_with("bert.") || name.starts_with("classifier.") {
        Some(name.to_string())
    } else if name.starts_with("embeddings.") || name.starts_with("encoder.") || name.starts_with("pooler.") {
        Some(format!("bert.{name}"))
    } else {
        None
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

impl ModelDir {
    /// Load a directory. `head` forces the label set (a task head on a pretrained backbone);
    /// a checkpoint head of a different shape is then re-initialised and reported.
    pub fn load(dir: &Path, head: Option<&HeadSpec>, seed: u64, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let mut config = BertConfig::from_file(&cfg_path)?;
        if let Some(h) = head {
            config.set_labels(&h.label_names, h.regression);
        } else if config.labels().is_none() {
            return Err(ModelError::Config {
                path: cfg_path,
                msg: "no num_labels/id2label: a backbone without a task head (fine-tune it first with `kd finetune`)".into(),
            });
        }
        let num_labels = config.labels().unwrap_or(2);
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            let msg = if dir.join("pytorch_model.bin").exists() {
                "has pytorch_model.bin but no model.safetensors; convert it (transformers: save_pretrained(safe_serialization=True))"
            } else {
                "no model.safetensors"
            };
            return Err(ModelError::Checkpoint { path: dir.to_path_buf(), msg: msg.into() });
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = BertForSequenceClassification::load(vb, &config, num_labels)?;
        let report = fill_varmap(&varmap, &weights, &config, seed, device)?;
        Ok(Self { dir: dir.to_path_buf(), config, varmap, model, report })
    }

    /// A randomly initialised model of the given architecture (BERT init, seeded).
    pub fn random(config: BertConfig, num_labels: usize, seed: u64, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = BertForSequenceClassification::load(vb, &config, num_labels)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut report = LoadReport::default();
        for (name, var) in sorted_vars(&varmap) {
            var.set(&init_tensor(&name, var.as_tensor(), &config, &mut rng)?)?;
            report.initialised.push(name);
        }
        Ok(Self { dir: PathBuf::new(), config, varmap, model, report })
    }
}

/// The parameters of a VarMap in name order (a deterministic order for init and optimisers).
pub fn sorted_vars(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn init_tensor(name: &str, like: &Tensor, cfg: &BertConfig, rng: &mut rand::rngs::StdRng) -> Result<Tensor> {
    let dims = like.dims().to_vec();
    let t = if name.contains("LayerNorm.weight") {
        Tensor::ones(dims.as_slice(), DType::F32, like.device())?
    } else if name.ends_with(".weight") && dims.len() == 2 {
        let mut w = randn(rng, &dims, cfg.initializer_range, like.device())?;
        if name.ends_with("word_embeddings.weight") && cfg.pad_token_id < dims[0] {
            // HF zeroes the padding_idx row of the word embeddings.
            let mut rows = w.to_vec2::<f32>()?;
            rows[cfg.pad_token_id].iter_mut().for_each(|x| *x = 0.0);
            w = Tensor::new(rows, like.device())?;
        }
        w
    } else {
        Tensor::zeros(dims.as_slice(), DType::F32, like.device())?
    };
    Ok(t)
}

fn fill_varmap(varmap: &VarMap, weights: &Path, cfg: &BertConfig, seed: u64, device: &Device) -> Result<LoadReport> {
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(weights) }.map_err(|e| {
        ModelError::Checkpoint { path: weights.to_path_buf(), msg: format!("cannot read safetensors: {e}") }
    })?;
    let mut by_name: HashMap<String, String> = HashMap::new();
    let mut report = LoadReport::default();
    for (name, view) in file.tensors() {
        let float = matches!(
            view.dtype(),
            safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16 | safetensors::Dtype::F64
        );
        match canonical(&name) {
            Some(c) if float => {
                by_name.insert(c, name);
            }
            // position_ids and other integer buffers are not parameters.
            Some(_) => {}
            None => report.unused.push(name),
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let vars = sorted_vars(varmap);
    let known: std::collections::HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    for (name, var) in &vars {
        let expected = var.as_tensor().dims().to_vec();
        match by_name.get(name) {
            Some(file_name) => {
                let t = file.load(file_name, device)?.to_dtype(DType::F32)?;
                if t.dims() != expected.as_slice() {
                    if name.starts_with("classifier.") {
                        var.set(&init_tensor(name, var.as_tensor(), cfg, &mut rng)?)?;
                        report.initialised.push(format!("{name} (file shape {:?})", t.dims()));
                        continue;
                    }
                    return Err(ModelError::ShapeMismatch {
                        path: weights.to_path_buf(),
                        name: file_name.clone(),
                        expected,
                        got: t.dims().to_vec(),
                    });
                }
                var.set(&t)?;
                report.loaded.push(name.clone());
            }
            None if name.starts_with("bert.embeddings") || name.starts_with("bert.encoder") => {
                return Err(ModelError::MissingTensor { path: weights.to_path_buf(), name: name.clone() });
            }
            None => {
                var.set(&init_tensor(name, var.as_tensor(), cfg, &mut rng)?)?;
                report.initialised.push(name.clone());
            }
        }
    }
    for (c, orig) in &by_name {
        if !known.contains(c.as_str()) {
            report.unused.push(orig.clone());
        }
    }
    report.unused.sort();
    Ok(report)
}

/// Write `dir` atomically: everything goes to a sibling temp directory that is renamed into
/// place, so an interrupted save never leaves a half-written checkpoint behind.
pub fn save_dir_atomic(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    write(&tmp)?;
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}

/// Write a file atomically (temp file in the same directory, then rename).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Save the parameters of `varmap` as safetensors with their (HF) names.
pub fn save_tensors(varmap: &VarMap, path: &Path) -> Result<()> {
    let map: BTreeMap<String, Tensor> =
        sorted_vars(varmap).into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
    let map: HashMap<String, Tensor> = map.into_iter().collect();
    candle_core::safetensors::save(&map, path)?;
    Ok(())
}

/// Save a complete HF-format model directory (config, weights, tokenizer files from `tokenizer_src`).
pub fn save_model(dir: &Path, varmap: &VarMap, config: &BertConfig, tokenizer_src: &Path) -> Result<()> {
    save_dir_atomic(dir, |tmp| write_model_files(tmp, varmap, config, tokenizer_src))
}

/// Write config, weights and tokenizer files into an existing (temporary) directory.
pub fn write_model_files(dir: &Path, varmap: &VarMap, config: &BertConfig, tokenizer_src: &Path) -> Result<()> {
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, config.to_json_pretty()).map_err(io_err(&cfg))?;
    save_tensors(varmap, &dir.join("model.safetensors"))?;
    for f in TOKENIZER_FILES {
        let src = tokenizer_src.join(f);
        if src.exists() {
            std::fs::copy(&src, dir.join(f)).map_err(io_err(&src))?;
        }
    }
    Ok(())
}
