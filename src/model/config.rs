//! HF `config.json` for BERT, plus MPCFormer's `softmax_act` and a 2Quad shift.
//!
//! Unknown keys are kept (`extra`) and written back, so a checkpoint we save keeps everything the
//! source config said; keys we own (`num_labels`, `id2label`, `problem_type`, …) are rewritten.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::approx::{HiddenAct, SoftmaxAct, DEFAULT_TWO_QUAD_C};
use super::{ModelError, Result};

fn d_dropout() -> f64 {
    0.1
}
fn d_type_vocab() -> usize {
    2
}
fn d_init_range() -> f64 {
    0.02
}
fn d_ln_eps() -> f64 {
    1e-12
}
fn d_max_pos() -> usize {
    512
}
fn d_quad_c() -> f64 {
    DEFAULT_TWO_QUAD_C
}
fn d_gelu() -> HiddenAct {
    HiddenAct::Gelu
}

/// HF's `problem_type`; we use it to tell STS-B regression from classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    Regression,
    SingleLabelClassification,
    MultiLabelClassification,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "d_gelu")]
    pub hidden_act: HiddenAct,
    #[serde(default)]
    pub softmax_act: SoftmaxAct,
    /// Shift c of 2Quad, (x + c)²; only read when `softmax_act` is 2quad.
    #[serde(default = "d_quad_c")]
    pub softmax_2quad_c: f64,
    #[serde(default = "d_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "d_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_dropout: Option<f64>,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "d_init_range")]
    pub initializer_range: f64,
    #[serde(default = "d_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<ProblemType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// Everything else in the file, preserved verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl BertConfig {
    /// Read and validate `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: BertConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        cfg.validate().map_err(|msg| ModelError::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(pe) = self.extra.get("position_embedding_type") {
            if pe != "absolute" {
                return Err(format!("position_embedding_type {pe} is not supported (only \"absolute\")"));
            }
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} = {p} is not in [0, 1)"));
            }
        }
        if let (Some(n), Some(m)) = (self.num_labels, &self.id2label) {
            if n != m.len() {
                return Err(format!("num_labels {n} disagrees with id2label ({} entries)", m.len()));
            }
        }
        Ok(())
    }

    /// Number of classifier outputs this config asks for, if it says.
    pub fn labels(&self) -> Option<usize> {
        if self.problem_type == Some(ProblemType::Regression) {
            return Some(1);
        }
        self.num_labels.or(self.id2label.as_ref().map(|m| m.len()))
    }

    pub fn is_regression(&self) -> bool {
        self.problem_type == Some(ProblemType::Regression)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Set the classification head description as HF expects it.
    pub fn set_labels(&mut self, names: &[String], regression: bool) {
        self.num_labels = Some(names.len());
        self.id2label = Some(names.iter().enumerate().map(|(i, n)| (i.to_string(), n.clone())).collect());
        self.label2id = Some(names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect());
        self.problem_type = Some(if regression {
            ProblemType::Regression
        } else {
            ProblemType::SingleLabelClassification
        });
        self.architectures = Some(vec!["BertForSequenceClassification".to_string()]);
    }

    /// Label names in id order (falls back to "LABEL_i").
    pub fn label_names(&self) -> Vec<String> {
        let n = self.labels().unwrap_or(2);
        (0..n)
            .map(|i| {
                self.id2label
                    .as_ref()
                    .and_then(|m| m.get(&i.to_string()).cloned())
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect()
    }

    pub fn to_json_pretty(&self) -> String {
        // Serialising a struct of plain data cannot fail.
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    /// A small random-weight config (for tests and benchmarks).
    pub fn tiny(layers: usize, hidden: usize, heads: usize, vocab: usize) -> Self {
        serde_json::from_value(serde_json::json!({
            "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "intermediate_size": hidden * 4,
            "max_position_embeddings": 512, "model_type": "bert"
        }))
        .expect("literal config parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minilm_style_config_and_keeps_unknown_keys() {
        let text = r#"{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,
            "intermediate_size":1536,"num_attention_heads":12,"num_hidden_layers":6,
            "vocab_size":30522,"model_type":"bert","gradient_checkpointing":false,
            "position_embedding_type":"absolute"}"#;
        let c: BertConfig = serde_json::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.softmax_act, SoftmaxAct::Softmax);
        assert_eq!(c.layer_norm_eps, 1e-12);
        let back: serde_json::Value = serde_json::from_str(&c.to_json_pretty()).unwrap();
        assert_eq!(back["model_type"], "bert");
        assert_eq!(back["gradient_checkpointing"], false);
        assert_eq!(back["softmax_act"], "softmax");
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = BertConfig::tiny(2, 64, 4, 100);
        c.num_attention_heads = 5;
        assert!(c.validate().unwrap_err().contains("multiple"));
        let e = serde_json::from_str::<BertConfig>(
            r#"{"vocab_size":1,"hidden_size":4,"num_hidden_layers":1,"num_attention_heads":1,
               "intermediate_size":4,"hidden_act":"swish"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("swish"), "{e}");
    }

    #[test]
    fn labels_and_regression() {
        let mut c = BertConfig::tiny(1, 8, 2, 10);
        c.set_labels(&["score".to_string()], true);
        assert_eq!(c.labels(), Some(1));
        assert!(c.is_regression());
        c.set_labels(&["neg".into(), "pos".into()], false);
        assert_eq!(c.label_names(), vec!["neg", "pos"]);
        let v: serde_json::Value = serde_json::from_str(&c.to_json_pretty()).unwrap();
        assert_eq!(v["id2label"]["1"], "pos");
        assert_eq!(v["problem_type"], "single_label_classification");
    }
}
