//! Resolve `--model`: a local HF directory, or a hub id (`org/name`) fetched with `hf-hub`
//! (blocking ureq client; `HF_ENDPOINT` and `HF_HOME` are honoured, so a mirror works).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("model '{0}': no such directory, and it is not a hub id (org/name)")]
    NotFound(String),
    #[error("model '{id}': download of {file} failed: {msg}")]
    Download { id: String, file: String, msg: String },
}

/// Files a BERT checkpoint needs (the first two are required).
const FILES: [&str; 6] =
    ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"];

pub fn resolve_model(spec: &str) -> Result<PathBuf, HubError> {
    let p = Path::new(spec);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let looks_like_id = spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.contains('\\');
    if !looks_like_id {
        return Err(HubError::NotFound(spec.to_string()));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| HubError::Download { id: spec.into(), file: "-".into(), msg: e.to_string() })?;
    let repo = api.model(spec.to_string());
    let mut dir = None;
    for (i, f) in FILES.iter().enumerate() {
        match repo.get(f) {
            Ok(path) => dir = path.parent().map(Path::to_path_buf),
            Err(e) if i < 2 => {
                return Err(HubError::Download { id: spec.into(), file: f.to_string(), msg: e.to_string() })
            }
            Err(_) => {}
        }
    }
    dir.ok_or_else(|| HubError::NotFound(spec.to_string()))
}
