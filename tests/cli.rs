//! `kd` as a user runs it, in temp directories: help, error reporting, a small end-to-end
//! fine-tune → eval on real SST-2 rows, and resume after interruption.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn kd(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd")).args(args).current_dir(cwd).output().expect("kd runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn help_lists_every_subcommand() {
    let t = tempfile::tempdir().unwrap();
    let o = kd(&["--help"], t.path());
    assert!(o.status.success());
    for c in ["finetune", "train", "eval", "private-eval", "bench"] {
        assert!(text(&o).contains(c), "help lacks {c}: {}", text(&o));
    }
}

#[test]
fn bad_inputs_name_the_problem() {
    let t = tempfile::tempdir().unwrap();
    let sst2 = common::glue("SST-2");
    let model = common::minilm();
    let o = kd(&["eval", "--model", "/nonexistent/model", "--task", "sst2", "--data", sst2.to_str().unwrap()], t.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/model"), "{}", text(&o));

    let o = kd(&["eval", "--model", model.to_str().unwrap(), "--task", "sst3", "--data", sst2.to_str().unwrap()], t.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown task 'sst3'"), "{}", text(&o));

    // A backbone without a head cannot be evaluated as-is.
    let o = kd(&["eval", "--model", model.to_str().unwrap(), "--task", "sst2", "--data", sst2.to_str().unwrap()], t.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("config.json"), "{}", text(&o));

    // Malformed data: the error names file and line.
    let bad = t.path().join("SST-2");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("train.tsv"), "sentence\tlabel\ngood movie\t1\nbad row without label\n").unwrap();
    std::fs::write(bad.join("dev.tsv"), "sentence\tlabel\nfine\t1\n").unwrap();
    let o = kd(
        &["finetune", "--model", model.to_str().unwrap(), "--task", "sst2", "--data", bad.to_str().unwrap(), "--out", "o"],
        t.path(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("train.tsv:3"), "{}", text(&o));

    // Config/tokenizer mismatch: a vocab larger than the model's embedding table.
    let small = common::minilm_variant(|c| c["vocab_size"] = 1000.into());
    let o = kd(
        &["finetune", "--model", small.path().to_str().unwrap(), "--task", "sst2", "--data", sst2.to_str().unwrap(), "--out", "o"],
        t.path(),
    );
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(msg.contains("vocab_size") || msg.contains("shape"), "{msg}");
}

fn read_weights(dir: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu).unwrap()
}

#[test]
fn finetune_then_eval_end_to_end_and_resume_equals_uninterrupted() {
    let t = tempfile::tempdir().unwrap();
    let sst2 = common::glue("SST-2");
    let model = common::minilm();
    let base = [
        "finetune", "--model", model.to_str().unwrap(), "--task", "sst2", "--data", sst2.to_str().unwrap(),
        "--epochs", "2", "--batch-size", "16", "--limit-train", "64", "--limit-dev", "32", "--eval-every", "2",
        "--lr", "1e-4",
    ];
    let run = |out: &str, extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(["--out", out]);
        a.extend(extra);
        let o = kd(&a, t.path());
        assert!(o.status.success(), "{}", text(&o));
        o
    };
    run("full", &[]);
    // Interrupted after 3 of 8 steps, then the same command again.
    run("resumed", &["--stop-after-steps", "3"]);
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("resumed/train_state/state.json")).unwrap()).unwrap();
    assert_eq!(st["step"], 3);
    let o = run("resumed", &[]);
    assert!(text(&o).contains("resuming at step 3"), "{}", text(&o));
    let a = read_weights(&t.path().join("full/train_state"));
    let b = read_weights(&t.path().join("resumed/train_state"));
    // Same evaluations, same losses, same best checkpoint as the uninterrupted run.
    let log_full = std::fs::read_to_string(t.path().join("full/log.csv")).unwrap();
    let log_resumed = std::fs::read_to_string(t.path().join("resumed/log.csv")).unwrap();
    let cols = |s: &str| s.lines().map(|l| l.split(',').take(6).collect::<Vec<_>>().join(",")).collect::<Vec<_>>();
    assert_eq!(cols(&log_full), cols(&log_resumed), "step,epoch,lr,train_loss,dev_metric,accuracy");
    let best = read_weights(&t.path().join("full"));
    let best_r = read_weights(&t.path().join("resumed"));
    for (name, ta) in &best {
        let d: f32 = (ta - &best_r[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-5, "best checkpoint {name} differs by {d}");
    }
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        let d: f32 = (ta - &b[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-5, "{name}: resumed run differs by {d}");
    }
    // Changing the recipe on an existing output directory is refused.
    let mut a: Vec<&str> = base.to_vec();
    a.extend(["--out", "full", "--seed", "7"]);
    let o = kd(&a, t.path());
    assert!(!o.status.success() && text(&o).contains("different settings"), "{}", text(&o));

    // The checkpoint is an HF directory with a task head.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("full/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "BertForSequenceClassification");
    assert_eq!(cfg["id2label"]["1"], "1");
    let w = read_weights(&t.path().join("full"));
    assert!(w.contains_key("bert.encoder.layer.5.output.dense.weight") && w.contains_key("classifier.weight"));
    assert!(t.path().join("full/log.csv").exists() && t.path().join("full/tokenizer.json").exists());

    let o = kd(
        &[
            "eval", "--model", "full", "--task", "sst2", "--data", sst2.to_str().unwrap(), "--limit", "20",
            "--predictions", "p.csv", "--output", "o.json", "--results", "r.csv",
        ],
        t.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(t.path().join("p.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "index,label,prediction,logit_0,logit_1");
    assert_eq!(lines.len(), 21);
    assert!(lines[1].starts_with("0,1,"), "{}", lines[1]);
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.path().join("o.json")).unwrap()).unwrap();
    assert_eq!(j["task"], "sst2");
    assert_eq!(j["split"], "dev");
    assert_eq!(j["examples"], 20);
    let acc = j["metrics"]["accuracy"].as_f64().unwrap();
    // Accuracy must agree with the predictions file.
    let correct = lines[1..].iter().filter(|l| {
        let f: Vec<&str> = l.split(',').collect();
        f[1] == f[2]
    });
    assert!((acc - correct.count() as f64 / 20.0).abs() < 1e-12);
    let r = std::fs::read_to_string(t.path().join("r.csv")).unwrap();
    assert!(r.starts_with("mode,model,task") && r.lines().count() == 2, "{r}");
}
