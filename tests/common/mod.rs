//! Shared helpers for integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The assets root (`$KD_ASSETS`, default `../shared` beside the crate). A missing root fails
/// the test: CI must provide the assets, and a silently skipped check would prove nothing.
pub fn assets() -> PathBuf {
    let root = match std::env::var_os("KD_ASSETS") {
        Some(v) => PathBuf::from(v),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    assert!(
        root.join("models/all-MiniLM-L6-v2/model.safetensors").is_file(),
        "assets missing: {} has no models/all-MiniLM-L6-v2; set KD_ASSETS to the shared assets root",
        root.display()
    );
    // Absolute, so that a relative KD_ASSETS (the README's `../shared`) still names the assets
    // for `kd` processes that the tests start in temp directories.
    std::fs::canonicalize(&root).expect("the assets root resolves")
}

pub fn minilm() -> PathBuf {
    assets().join("models/all-MiniLM-L6-v2")
}

pub fn glue(task_dir: &str) -> PathBuf {
    assets().join("data/glue").join(task_dir)
}

/// A temp model dir: MiniLM's weights (symlinked) and tokenizer, with `edit` applied to config.json.
pub fn minilm_variant(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let src = minilm();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    std::os::unix::fs::symlink(src.join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// MiniLM (config edited by `edit`, 2 labels) with the classifier head of the PyTorch goldens.
pub fn minilm_with_golden_head(
    edit: impl FnOnce(&mut serde_json::Value),
) -> (tempfile::TempDir, mpcformer::model::ModelDir) {
    let dir = minilm_variant(|c| {
        c["num_labels"] = 2.into();
        edit(c);
    });
    let dev = candle_core::Device::Cpu;
    let md = mpcformer::model::ModelDir::load(dir.path(), None, 0, &dev).unwrap();
    let head = candle_core::safetensors::load(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/minilm_classifier.safetensors"),
        &dev,
    )
    .unwrap();
    {
        let data = md.varmap.data().lock().unwrap();
        for n in ["classifier.weight", "classifier.bias"] {
            data[n].set(&head[n]).unwrap();
        }
    }
    (dir, md)
}
