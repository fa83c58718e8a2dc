//! `kd private-eval` end to end on real SST-2 dev rows: a 2-layer MiniLM variant (real
//! embeddings and encoder weights, exact GeLU + softmax) under MPC against `kd eval` of the same
//! model directory.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn kd(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd")).args(args).current_dir(cwd).output().expect("kd runs")
}

fn logits(csv: &str) -> Vec<(usize, Vec<f64>)> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2].parse().unwrap(), f[3..].iter().map(|v| v.parse().unwrap()).collect())
        })
        .collect()
}

/// A 2-layer, 2-label MiniLM variant, a working directory and the SST-2 data.
fn two_layer_sst2() -> (tempfile::TempDir, tempfile::TempDir, std::path::PathBuf) {
    let model = common::minilm_variant(|c| {
        c["num_labels"] = 2.into();
        c["num_hidden_layers"] = 2.into();
    });
    (model, tempfile::tempdir().unwrap(), common::glue("SST-2"))
}

#[test]
fn private_eval_agrees_with_plaintext_eval() {
    let (model, t, sst2) = two_layer_sst2();
    let (m, d) = (model.path().to_str().unwrap(), sst2.to_str().unwrap());
    let common_args = ["--model", m, "--task", "sst2", "--data", d, "--limit", "5", "--max-seq-len", "24", "--no-results"];
    let mut a: Vec<&str> = vec!["private-eval"];
    a.extend(common_args);
    a.extend(["--predictions", "private.csv", "--output", "private.json"]);
    let o = kd(&a, t.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut b: Vec<&str> = vec!["eval"];
    b.extend(common_args);
    b.extend(["--predictions", "plain.csv"]);
    let o = kd(&b, t.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let private = std::fs::read_to_string(t.path().join("private.csv")).unwrap();
    let plain = std::fs::read_to_string(t.path().join("plain.csv")).unwrap();
    assert_eq!(private.lines().next(), plain.lines().next(), "same CSV header as kd eval");
    let (pv, pl) = (logits(&private), logits(&plain));
    assert_eq!(pv.len(), 5);
    let mut worst: f64 = 0.0;
    for ((cp, lp), (cq, lq)) in pv.iter().zip(&pl) {
        for (x, y) in lp.iter().zip(lq) {
            worst = worst.max((x - y).abs());
        }
        if (lq[0] - lq[1]).abs() > 0.05 {
            assert_eq!(cp, cq, "prediction differs on a row with a clear margin: {lp:?} vs {lq:?}");
        }
    }
    assert!(worst < 0.02, "max logit difference {worst}");

    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.path().join("private.json")).unwrap()).unwrap();
    assert_eq!(j["task"], "sst2");
    assert_eq!(j["examples"], 5);
    assert!(j["metrics"]["accuracy"].is_number());
    let mpc = &j["mpc"];
    for k in ["rounds", "bytes_per_party", "online_seconds", "offline_seconds", "agreement", "max_abs_logit_diff"] {
        assert!(mpc[k].is_number(), "mpc.{k} missing: {mpc}");
    }
    assert!(mpc["rounds"].as_f64().unwrap() > 100.0);
    // The plaintext twin's largest attention score, checked against the private bound.
    let smax = mpc["max_abs_attention_score"].as_f64().unwrap();
    assert!(smax > 0.5 && smax < (1u64 << mpcformer::mpc::bert::SCORE_BITS) as f64, "max |score| {smax}");
    assert!((mpc["max_abs_logit_diff"].as_f64().unwrap() - worst).abs() < 1e-3);
    for p in ["lan", "wan"] {
        assert!(mpc["network"][p]["online_seconds"].as_f64().unwrap() > 0.0, "network.{p}");
    }
    assert!(
        mpc["network"]["wan"]["online_seconds"].as_f64().unwrap() > mpc["network"]["lan"]["online_seconds"].as_f64().unwrap()
    );
    for c in ["embedding", "linear", "attention", "softmax", "activation", "layernorm", "pooler", "classifier"] {
        assert!(mpc["breakdown"][c]["rounds"].as_u64().unwrap() > 0, "breakdown.{c}: {}", mpc["breakdown"]);
    }
    // The upload of X − A: 5 rows × (≤ 24 tokens × 30522 words).
    assert!(mpc["breakdown"]["embedding"]["client_bytes"].as_u64().unwrap() > 5 * 3 * 30522 * 8);
}

/// A 1-layer, 2-label MiniLM variant whose query weights and bias are scaled by `k` (its
/// attention scores by `k` too).
fn scaled_query_model(k: f64) -> tempfile::TempDir {
    let model = common::minilm_variant(|c| {
        c["num_labels"] = 2.into();
        c["num_hidden_layers"] = 1.into();
    });
    let w = model.path().join("model.safetensors");
    let mut ts = candle_core::safetensors::load(&w, &candle_core::Device::Cpu).unwrap();
    let mut scaled = 0;
    for (name, v) in ts.iter_mut() {
        if name.contains("layer.0.attention.self.query") {
            *v = (v.clone() * k).unwrap();
            scaled += 1;
        }
    }
    assert_eq!(scaled, 2, "query weight and bias");
    std::fs::remove_file(&w).unwrap(); // the symlink to the shared weights
    candle_core::safetensors::save(&ts, &w).unwrap();
    model
}

/// Attention scores beyond the bound the private attention's narrow truncations admit
/// (`mpc::bert::SCORE_BITS`) are refused up front, by name, not turned into garbage logits.
#[test]
fn private_eval_refuses_scores_beyond_the_private_bound() {
    let model = scaled_query_model(3000.0);
    let (t, sst2) = (tempfile::tempdir().unwrap(), common::glue("SST-2"));
    let o = kd(&["private-eval", "--model", model.path().to_str().unwrap(), "--task", "sst2", "--data", sst2.to_str().unwrap(),
        "--limit", "2", "--max-seq-len", "16", "--no-results"], t.path());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("attention scores reach") && err.contains("2048"), "{err}");
}

/// `kd share --check-task/--check-data`: the model owner's check of the same bound before a
/// deployment (which has no plaintext twin): the scaled model is refused and nothing is
/// written; the real one passes and reports its largest score.
#[test]
fn share_checks_the_score_bound_on_task_rows() {
    let sst2 = common::glue("SST-2");
    let t = tempfile::tempdir().unwrap();
    let share = |m: &std::path::Path| {
        kd(&["share", "--model", m.to_str().unwrap(), "--out", "shares", "--check-task", "sst2", "--check-data",
            sst2.to_str().unwrap(), "--check-limit", "4", "--check-max-seq-len", "24"], t.path())
    };
    let bad = scaled_query_model(3000.0);
    let o = share(bad.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("attention scores reach"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!t.path().join("shares").exists(), "shares written for a refused model");
    let good = scaled_query_model(1.0);
    let o = share(good.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err.lines().find(|l| l.starts_with("score check: largest attention score")).unwrap_or_else(|| panic!("{err}"));
    let v: f64 = line.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(v > 0.5 && v < 2048.0, "{line}");
    assert!(t.path().join("shares/p0").is_dir());
}

#[test]
fn private_eval_rejects_bad_settings_clearly() {
    let model = common::minilm_variant(|c| {
        c["num_labels"] = 2.into();
        c["num_hidden_layers"] = 1.into();
    });
    let t = tempfile::tempdir().unwrap();
    let sst2 = common::glue("SST-2");
    let (m, d) = (model.path().to_str().unwrap(), sst2.to_str().unwrap());
    let o = kd(&["private-eval", "--model", m, "--task", "sst2", "--data", d, "--limit", "1", "--frac-bits", "40", "--no-results"], t.path());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--frac-bits 40"), "{err}");
    // A task whose head does not match the model's (STS-B is a regression task).
    let stsb = common::glue("STS-B");
    let o = kd(&["private-eval", "--model", m, "--task", "stsb", "--data", stsb.to_str().unwrap(), "--no-results"], t.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("config.json"));
}

/// Killed mid-run, `kd private-eval --output F` leaves its finished rows in `F.rows.jsonl`; the
/// same command then runs only the rest, and the result covers every row. A journal from a
/// different run is refused with an error naming it.
#[test]
fn interrupted_private_eval_resumes_from_its_journal() {
    let (model, t, sst2) = two_layer_sst2();
    let (m, d) = (model.path().to_str().unwrap(), sst2.to_str().unwrap());
    let args = ["private-eval", "--model", m, "--task", "sst2", "--data", d, "--limit", "16", "--max-seq-len", "32",
        "--no-results", "--output", "out.json", "--predictions", "out.csv", "--threads", "1"];
    let journal = t.path().join("out.json.rows.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kd")).args(args).current_dir(t.path())
        .stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Wait until at least two rows are journaled (header + 2 lines), then kill it.
    let t0 = std::time::Instant::now();
    loop {
        let n = std::fs::read_to_string(&journal).map(|s| s.lines().count()).unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "finished before it could be interrupted");
        assert!(t0.elapsed().as_secs() < 600, "no rows journaled");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!t.path().join("out.json").exists(), "no result from the interrupted run");
    let kept = std::fs::read_to_string(&journal).unwrap().lines().count() - 1;
    assert!((2..16).contains(&kept), "{kept} rows journaled");

    let o = kd(&args, t.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming"), "{err}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.path().join("out.json")).unwrap()).unwrap();
    assert_eq!(r["examples"], 16);
    assert!(r["mpc"]["resumed_rows"].as_u64().unwrap() >= 2);
    assert_eq!(r["mpc"]["agreement"], 1.0, "{}", r["mpc"]);
    assert!(r["mpc"]["max_abs_logit_diff"].as_f64().unwrap() < 0.02);
    assert_eq!(std::fs::read_to_string(t.path().join("out.csv")).unwrap().lines().count(), 17);
    assert!(!journal.exists(), "the journal is removed once the result is written");

    // A journal of some other run is not silently reused or discarded.
    std::fs::write(&journal, "{\"journal\":{\"model\":\"elsewhere\"}}\n").unwrap();
    let o = kd(&args, t.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("out.json.rows.jsonl") && err.contains("different private-eval"), "{err}");
}
