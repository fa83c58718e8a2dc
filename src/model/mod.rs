//! Plaintext BERT for sequence classification with MPC-friendly approximations.
//!
//! The model mirrors HF transformers' `BertForSequenceClassification` tensor for tensor
//! (names, shapes, post-LN residual blocks, tanh pooler, linear classifier) so that HF-format
//! checkpoints load unchanged and the checkpoints we write load in transformers. The GeLU and
//! softmax of every layer are chosen in `config.json` the way MPCFormer does it
//! (`hidden_act` ∈ {gelu, gelu_new, relu, quad}, `softmax_act` ∈ {softmax, 2relu, 2quad};
//! MPCFormer spec §1.1). This module is the plaintext twin that distillation trains and that
//! the MPC executor must reproduce.

pub mod approx;
pub mod bmm;
pub mod bert;
pub mod checkpoint;
pub mod config;
pub mod fused;
pub mod fused_approx;
pub mod gelu;
pub mod norm;
pub mod pack;
pub mod rng;

pub use approx::{HiddenAct, SoftmaxAct};
pub use bert::{BertForSequenceClassification, ModelOutput};
pub use checkpoint::{LoadReport, ModelDir};
pub use config::{BertConfig, ProblemType};
pub use rng::Mode;

/// Errors from building, loading or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {msg}")]
    Config { path: std::path::PathBuf, msg: String },
    #[error("{path}: tensor '{name}' has shape {got:?}, the config implies {expected:?}")]
    ShapeMismatch {
        path: std::path::PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: required tensor '{name}' is missing")]
    MissingTensor { path: std::path::PathBuf, name: String },
    #[error("{path}: {msg}")]
    Checkpoint { path: std::path::PathBuf, msg: String },
    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: std::path::PathBuf, msg: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
