//! `kd train` as a user runs it, in temp directories: a two-stage distillation of a 6-layer
//! MiniLM teacher into a 3-layer Quad+2Quad student on real SST-2 rows, resume after
//! interruption (in stage 1 and in stage 2) equal to an uninterrupted run, the label-only
//! baselines, and recipe errors that name the file and field.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn kd(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd")).args(args).current_dir(cwd).output().expect("kd runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn read_weights(dir: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu).unwrap()
}

fn max_diff(a: &Path, b: &Path) -> f32 {
    let (wa, wb) = (read_weights(a), read_weights(b));
    assert_eq!(wa.len(), wb.len());
    wa.iter()
        .map(|(n, t)| (t - &wb[n]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap())
        .fold(0.0, f32::max)
}

fn recipe(teacher: &Path, stage1: bool, objective: &str, init: &str) -> String {
    let sst2 = common::glue("SST-2");
    let mut r = format!(
        r#"task = "sst2"
teacher = "{}"
data = "{}"
out = "unused"
seed = 5
batch_size = 8
eval_batch_size = 16
limit_train = 32
limit_dev = 16

[student]
hidden_act = "quad"
softmax_act = "2quad"
layers = 3
init = "{init}"
"#,
        teacher.display(),
        sst2.display()
    );
    if stage1 {
        r += r#"
[stage1]
epochs = 1
log_every = 2
optimizer = { kind = "bertadam", lr = 1e-4, schedule = { kind = "constant" } }
"#;
    }
    r += &format!(
        r#"
[stage2]
objective = "{objective}"
epochs = 1
eval_every = 2
optimizer = {{ kind = "bertadam", lr = 1e-4, schedule = {{ kind = "bert_warmup_linear", warmup = 0.1 }} }}
"#
    );
    r
}

/// The teacher: MiniLM with a seeded 2-class head (its quality does not matter here).
/// MiniLM with a 2-label head, saved with the head (so every command loads the same teacher).
fn teacher() -> tempfile::TempDir {
    let src = common::minilm_variant(|c| {
        c["num_labels"] = 2.into();
    });
    let dev = candle_core::Device::Cpu;
    let md = mpcformer::model::ModelDir::load(src.path(), None, 0, &dev).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("teacher");
    mpcformer::model::checkpoint::save_model(&out, &md.varmap, &md.config, src.path()).unwrap();
    // Keep the TempDir handle, but point it at the saved checkpoint's contents.
    for e in std::fs::read_dir(&out).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    std::fs::remove_dir(&out).unwrap();
    dir
}

#[test]
fn two_stage_distillation_end_to_end_and_resume_equals_uninterrupted() {
    let t = tempfile::tempdir().unwrap();
    let teacher = teacher();
    std::fs::write(t.path().join("r.toml"), recipe(teacher.path(), true, "distill", "teacher")).unwrap();
    let run = |out: &str, extra: &[&str]| {
        let mut a = vec!["train", "--recipe", "r.toml", "--out", out];
        a.extend(extra);
        let o = kd(&a, t.path());
        assert!(o.status.success(), "{}", text(&o));
        o
    };
    let o = run("full", &[]);
    assert!(text(&o).contains("best dev accuracy"), "{}", text(&o));
    assert!(text(&o).contains("teacher logits for 32 training rows"), "{}", text(&o));

    // Interrupted inside stage 1 (step 3 of 4, between log points), then inside stage 2
    // (step 1 of 4), then run to the end: the same command each time.
    run("resumed", &["--stop-after-steps", "3"]);
    let state = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(t.path().join(p).join("train_state/state.json")).unwrap()).unwrap()
    };
    assert_eq!((state("resumed")["stage"].as_u64(), state("resumed")["step"].as_u64()), (Some(1), Some(3)));
    let o = run("resumed", &["--stop-after-steps", "5"]);
    assert!(text(&o).contains("resuming stage 1 at step 3"), "{}", text(&o));
    assert_eq!((state("resumed")["stage"].as_u64(), state("resumed")["step"].as_u64()), (Some(2), Some(1)));
    let o = run("resumed", &[]);
    assert!(text(&o).contains("resuming stage 2 at step 1"), "{}", text(&o));
    assert_eq!(state("resumed")["stage"].as_u64(), Some(3));

    // Same losses and dev metrics at every log point, same stage-1 student, same best student.
    let log = |p: &str| -> Vec<String> {
        std::fs::read_to_string(t.path().join(p).join("log.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string()) // drop the seconds column
            .collect()
    };
    let full_log = log("full");
    assert_eq!(full_log.len(), 1 + 2 + 2, "header + 2 stage-1 rows + 2 stage-2 rows: {full_log:?}");
    assert_eq!(full_log, log("resumed"));
    assert!(max_diff(&t.path().join("full/stage1"), &t.path().join("resumed/stage1")) < 1e-5);
    assert!(max_diff(&t.path().join("full"), &t.path().join("resumed")) < 1e-5);
    // The summary of the resumed run keeps everything but the timing: the student's
    // initialisation report (which tensors came from the teacher) and the selected checkpoint.
    let summary = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(t.path().join(p).join("train.json")).unwrap()).unwrap()
    };
    let (sf, sr) = (summary("full"), summary("resumed"));
    assert!(sf["student"]["copied"].as_array().is_some_and(|a| !a.is_empty()), "{sf}");
    assert_eq!(sf["student"], sr["student"]);
    assert_eq!((&sf["best_step"], &sf["best_metric"]), (&sr["best_step"], &sr["best_metric"]));
    assert_eq!((sf["resumed"].as_bool(), sr["resumed"].as_bool()), (Some(false), Some(true)));

    // Stage 1 moved the student towards the teacher: the layer-wise loss fell.
    let s1: Vec<f64> = full_log[1..3].iter().map(|l| l.split(',').nth(4).unwrap().parse().unwrap()).collect();
    assert!(s1[1] < s1[0], "stage-1 loss did not fall: {s1:?}");

    // The student is an HF directory with its approximations and depth in config.json.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("full/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["hidden_act"], "quad");
    assert_eq!(cfg["softmax_act"], "2quad");
    assert_eq!(cfg["num_hidden_layers"], 3);
    let w = read_weights(&t.path().join("full"));
    assert!(w.contains_key("bert.encoder.layer.2.output.dense.weight"));
    assert!(!w.contains_key("bert.encoder.layer.3.output.dense.weight"));
    for f in ["recipe.toml", "train.json", "loss.png", "tokenizer.json", "stage1/config.json"] {
        assert!(t.path().join("full").join(f).exists(), "missing {f}");
    }
    let png = std::fs::read(t.path().join("full/loss.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let saved = std::fs::read_to_string(t.path().join("full/recipe.toml")).unwrap();
    assert!(saved.contains("out = \"full\"") && saved.contains("layers = 3"), "{saved}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("full/train.json")).unwrap()).unwrap();
    assert_eq!(summary["finished"], true);
    assert_eq!(summary["stage1"]["steps"], 4);
    assert_eq!(summary["stage2"]["steps"], 4);
    assert!(summary["teacher_metric"].as_f64().is_some() && summary["best_metric"].as_f64().is_some());

    // The student evaluates like any model.
    let sst2 = common::glue("SST-2");
    let o = kd(
        &["eval", "--model", "full", "--task", "sst2", "--data", sst2.to_str().unwrap(), "--limit", "16", "--no-results",
          "--output", "e.json"],
        t.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.path().join("e.json")).unwrap()).unwrap();
    let best = summary["best_metric"].as_f64().unwrap();
    assert!((e["metrics"]["accuracy"].as_f64().unwrap() - best).abs() < 1e-9, "eval {e} vs best {best}");

    // Teacher agreement = argmax agreement of the two models' `kd eval` predictions on dev.
    let mut classes = vec![];
    for (model, csv) in [("full", "s.csv"), (teacher.path().to_str().unwrap(), "t.csv")] {
        let o = kd(
            &["eval", "--model", model, "--task", "sst2", "--data", sst2.to_str().unwrap(), "--limit", "16",
              "--no-results", "--predictions", csv],
            t.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        let body = std::fs::read_to_string(t.path().join(csv)).unwrap();
        classes.push(body.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().to_string()).collect::<Vec<_>>());
    }
    let same = classes[0].iter().zip(&classes[1]).filter(|(a, b)| a == b).count();
    assert_eq!(classes[0].len(), 16);
    let want = same as f64 / 16.0;
    assert!((summary["teacher_agreement"].as_f64().unwrap() - want).abs() < 1e-9, "{} vs {want}", summary["teacher_agreement"]);

    // A different recipe on an existing run is refused.
    let o = kd(&["train", "--recipe", "r.toml", "--out", "full", "--seed", "6"], t.path());
    assert!(!o.status.success() && text(&o).contains("different recipe"), "{}", text(&o));

    // Stage 2 alone, started from the run's stage-1 checkpoint (`student.from`), repeats the
    // run's stage 2: same losses and dev metrics, same selected student.
    let r2 = recipe(teacher.path(), false, "distill", "teacher").replace("init = \"teacher\"\n", "init = \"teacher\"\nfrom = \"full/stage1\"\n");
    assert!(r2.contains("from = \"full/stage1\""));
    std::fs::write(t.path().join("s2from.toml"), &r2).unwrap();
    run_recipe_ok(t.path(), "s2from.toml", "s2from");
    let s2_log = log("s2from");
    assert_eq!(s2_log.len(), 1 + 2, "{s2_log:?}");
    assert_eq!(s2_log[0], full_log[0]);
    assert_eq!(s2_log[1..], full_log[3..]);
    assert!(max_diff(&t.path().join("full"), &t.path().join("s2from")) < 1e-5);
    let s2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("s2from/train.json")).unwrap()).unwrap();
    let copied = s2["student"]["copied"].as_array().unwrap();
    assert!(!copied.is_empty() && copied.iter().all(|c| c[1].as_str().unwrap().starts_with("full/stage1:")), "{s2}");
    assert_eq!(s2["student"]["initialised"].as_array().map(Vec::len), Some(0));
    assert_eq!(s2["student"]["from"].as_str(), Some("full/stage1"), "{s2}");
    assert_eq!(summary["student"]["from"], serde_json::Value::Null, "{summary}");
    // A checkpoint with other approximations is refused, naming its config; so is a random init.
    let o = kd(&["train", "--recipe", "s2from.toml", "--out", "bad", "--set", "student.softmax_act=2relu"], t.path());
    assert!(!o.status.success() && text(&o).contains("full/stage1/config.json") && text(&o).contains("student.from"), "{}", text(&o));
    let o = kd(&["train", "--recipe", "s2from.toml", "--out", "bad", "--set", "student.init=random"], t.path());
    assert!(!o.status.success() && text(&o).contains("s2from.toml") && text(&o).contains("exclude each other"), "{}", text(&o));
    // A checkpoint that lacks a tensor is refused by name, not filled with fresh weights.
    let partial = t.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    for e in std::fs::read_dir(t.path().join("full/stage1")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), partial.join(e.file_name())).unwrap();
    }
    let mut w = read_weights(&partial);
    assert!(w.remove("classifier.weight").is_some());
    candle_core::safetensors::save(&w, partial.join("model.safetensors")).unwrap();
    let o = kd(&["train", "--recipe", "s2from.toml", "--out", "bad", "--set", "student.from=\"partial\""], t.path());
    assert!(!o.status.success() && text(&o).contains("partial/model.safetensors") && text(&o).contains("classifier.weight"), "{}", text(&o));
}

/// `stage2.ema`: the weight average is what stage 2 evaluates and saves, it never changes the
/// training trajectory (the live weights at the end equal a run without it), and an interrupted
/// run resumes its average exactly.
#[test]
fn stage2_weight_average_is_selected_leaves_training_alone_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let teacher = teacher();
    let plain = recipe(teacher.path(), false, "distill", "teacher");
    let with_ema = plain.replace("eval_every = 2\n", "eval_every = 2\nema = { decay = 0.5 }\n");
    assert_ne!(plain, with_ema);
    std::fs::write(t.path().join("plain.toml"), plain).unwrap();
    std::fs::write(t.path().join("ema.toml"), with_ema).unwrap();
    let run = |r: &str, out: &str, extra: &[&str]| {
        let mut a = vec!["train", "--recipe", r, "--out", out];
        a.extend(extra);
        let o = kd(&a, t.path());
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let p = |x: &str| t.path().join(x);
    run("plain.toml", "plain", &[]);
    let full = run("ema.toml", "ema", &[]);
    assert!(full.contains("(weight average)"), "{full}");
    // 32 rows in batches of 8: 4 stage-2 steps; stopped after 1 and after 3 (between evaluations).
    run("ema.toml", "resumed", &["--stop-after-steps", "1"]);
    assert!(p("resumed/train_state/ema.safetensors").exists());
    run("ema.toml", "resumed", &["--stop-after-steps", "3"]);
    let last = run("ema.toml", "resumed", &[]);
    assert!(last.contains("resuming stage 2 at step 3"), "{last}");

    // Training itself is untouched: the live weights end equal with and without the average.
    let live = max_diff(&p("plain/train_state"), &p("ema/train_state"));
    assert!(live < 1e-6, "live weights differ by {live}");
    // The saved student is the average, not the live weights.
    assert!(max_diff(&p("plain"), &p("ema")) > 1e-7);
    // Resume: same log, same selected student, same final average.
    let log = |x: &str| -> Vec<String> {
        std::fs::read_to_string(p(x).join("log.csv")).unwrap().lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect()
    };
    assert_eq!(log("ema"), log("resumed"));
    assert!(max_diff(&p("ema"), &p("resumed")) < 1e-6);
    let avg = |x: &str| candle_core::safetensors::load(p(x).join("train_state/ema.safetensors"), &candle_core::Device::Cpu).unwrap();
    let (a, b) = (avg("ema"), avg("resumed"));
    assert_eq!(a.len(), read_weights(&p("ema")).len());
    for (n, x) in &a {
        let d = (x - &b[n]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-6, "{n}: averages differ by {d}");
    }
    // With the only evaluation at the end, the saved student is exactly the final average.
    run("ema.toml", "ema-end", &["--set", "stage2.eval_every=4"]);
    let (end_avg, best) = (avg("ema-end"), read_weights(&p("ema-end")));
    assert_eq!(end_avg.len(), best.len());
    for (n, x) in &end_avg {
        let d = (x - &best[n]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d == 0.0, "{n}: best student differs from the final average by {d}");
    }
}

fn run_recipe_ok(cwd: &Path, recipe: &str, out: &str) {
    let o = kd(&["train", "--recipe", recipe, "--out", out], cwd);
    assert!(o.status.success(), "{}", text(&o));
}

/// Stage 1 over two epochs caches the teacher's targets: the run follows one that runs the
/// teacher every step (`--teacher-cache-gib 0`) to float summation noise, a budget too small for
/// the cache falls back to the per-step teacher, and an interrupted cached run resumes to the
/// uninterrupted one.
#[test]
fn stage1_teacher_cache_matches_the_per_step_teacher_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let teacher = teacher();
    let r = recipe(teacher.path(), true, "distill", "teacher")
        .replacen("epochs = 1\nlog_every = 2", "epochs = 2\nlog_every = 2", 1)
        .replace("epochs = 1\neval_every", "epochs = 0.5\neval_every");
    assert!(r.contains("epochs = 2\nlog_every") && r.contains("epochs = 0.5\neval_every"), "{r}");
    std::fs::write(t.path().join("r.toml"), r).unwrap();
    let run = |out: &str, extra: &[&str]| {
        let mut a = vec!["train", "--recipe", "r.toml", "--out", out];
        a.extend(extra);
        let o = kd(&a, t.path());
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let cached = run("cached", &[]);
    assert!(cached.contains("teacher stage-1 targets for 32 training rows cached"), "{cached}");
    let per_step = run("per_step", &["--teacher-cache-gib", "0"]);
    assert!(!per_step.contains("teacher stage-1 targets"), "{per_step}");
    let small = run("small", &["--teacher-cache-gib", "0.000001", "--stop-after-steps", "1"]);
    assert!(small.contains("would need") && small.contains("the teacher runs every step"), "{small}");

    let stage1_losses = |p: &str| -> Vec<f64> {
        std::fs::read_to_string(t.path().join(p).join("log.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| l.starts_with("1,"))
            .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
            .collect()
    };
    let (a, b) = (stage1_losses("cached"), stage1_losses("per_step"));
    assert_eq!(a.len(), 4, "8 stage-1 steps logged every 2: {a:?}");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "stage-1 loss {x} (cached) vs {y} (per step)");
    }
    let d = max_diff(&t.path().join("cached/stage1"), &t.path().join("per_step/stage1"));
    assert!(d < 1e-5, "stage-1 students differ by {d}");

    run("resumed", &["--stop-after-steps", "3"]);
    let resumed = run("resumed", &[]);
    assert!(resumed.contains("resuming stage 1 at step 3") && resumed.contains("cached"), "{resumed}");
    assert_eq!(stage1_losses("cached"), stage1_losses("resumed"));
    assert!(max_diff(&t.path().join("cached/stage1"), &t.path().join("resumed/stage1")) < 1e-6);
}

#[test]
fn label_only_baselines_run_from_teacher_and_random_init() {
    let t = tempfile::tempdir().unwrap();
    let teacher = teacher();
    for (name, init) in [("wod", "teacher"), ("wopd", "random")] {
        std::fs::write(t.path().join(format!("{name}.toml")), recipe(teacher.path(), false, "labels", init)).unwrap();
        let r = format!("{name}.toml");
        let o = kd(&["train", "--recipe", &r, "--out", name], t.path());
        assert!(o.status.success(), "{}", text(&o));
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(t.path().join(name).join("train.json")).unwrap()).unwrap();
        assert!(s["stage1"].is_null());
        assert_eq!(s["stage2"]["steps"], 4);
        let copied = s["student"]["copied"].as_array().unwrap().len();
        assert_eq!(copied > 0, init == "teacher", "{init}: {copied} tensors copied");
    }
    // Prediction-layer distillation alone, for part of an epoch: the teacher runs per batch
    // (with ≥ 1 epoch its logits are computed once up front instead).
    let r = recipe(teacher.path(), false, "distill", "teacher").replace("epochs = 1\neval_every", "epochs = 0.5\neval_every");
    assert!(r.contains("epochs = 0.5"));
    std::fs::write(t.path().join("s2.toml"), r).unwrap();
    let o = kd(&["train", "--recipe", "s2.toml", "--out", "s2"], t.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("teacher logits for"), "{}", text(&o));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("s2/train.json")).unwrap()).unwrap();
    assert_eq!(s["stage2"]["steps"], 2);
    assert!(s["best_metric"].as_f64().is_some());
}

#[test]
fn recipe_errors_name_file_and_field() {
    let t = tempfile::tempdir().unwrap();
    let teacher = teacher();
    let good = recipe(teacher.path(), true, "distill", "teacher");
    let cases = [
        (good.replace("layers = 3", "layers = 3\nlayer = 2"), "unknown field `layer`"),
        (good.replace("layers = 3", "layers = 4"), "must divide"),
        (good.replace("objective = \"distill\"", "objective = \"magic\""), "magic"),
        (good.replace(&teacher.path().display().to_string(), "/nonexistent/teacher"), "/nonexistent/teacher"),
    ];
    for (i, (r, want)) in cases.iter().enumerate() {
        let f = format!("bad{i}.toml");
        std::fs::write(t.path().join(&f), r).unwrap();
        let o = kd(&["train", "--recipe", &f, "--out", "o"], t.path());
        assert!(!o.status.success(), "case {i} succeeded");
        assert!(text(&o).contains(want), "case {i}: {}", text(&o));
        if i < 3 {
            assert!(text(&o).contains(&f) || text(&o).contains("config.json"), "case {i} does not name the file: {}", text(&o));
        }
    }
    let o = kd(&["train", "--recipe", "missing.toml"], t.path());
    assert!(!o.status.success() && text(&o).contains("missing.toml"), "{}", text(&o));
    let o = kd(&["train", "--recipe", "bad0.toml", "--set", "nokey"], t.path());
    assert!(!o.status.success() && text(&o).contains("KEY=VALUE"), "{}", text(&o));
}

/// IMDb's files are sorted by label, so a budget run needs a sample, not a first-N limit.
#[test]
fn eval_sample_draws_from_the_whole_label_sorted_file() {
    let t = tempfile::tempdir().unwrap();
    let model = teacher();
    let imdb = common::assets().join("data/imdb");
    let run = |seed: &str| -> Vec<(usize, String)> {
        let o = kd(
            &["eval", "--model", model.path().to_str().unwrap(), "--task", "imdb", "--data", imdb.to_str().unwrap(),
              "--sample", "24", "--sample-seed", seed, "--max-seq-len", "32", "--no-results", "--predictions", "p.csv"],
            t.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read_to_string(t.path().join("p.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].parse().unwrap(), f[1].to_string())
            })
            .collect()
    };
    let a = run("3");
    assert_eq!(a.len(), 24);
    assert!(a.windows(2).all(|w| w[0].0 < w[1].0), "rows stay in file order");
    assert!(a.iter().any(|r| r.1 == "0") && a.iter().any(|r| r.1 == "1"), "both classes: {a:?}");
    assert_eq!(a, run("3"));
    assert_ne!(a, run("4"));
}
