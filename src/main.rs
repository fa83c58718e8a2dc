//! `kd`: parse the command line, run the command, print the error chain and exit non-zero on failure.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Parser;

use mpcformer::cli::{
    AugmentCmd, BenchPrivateCmd, BenchTrainCmd, BenchWhat, CertsCmd, Cli, Command, EvalCmd, FinetuneCmd, PartyCmd, PrivateEvalCmd,
    QueryCmd, ShareCmd, TrainCmd,
};
use mpcformer::data::batch::TextEncoder;
use mpcformer::data::{load_split, Task};
use mpcformer::eval::{append_results, predict, predict_with_max_score, predictions_csv, score, EvalReport};
use mpcformer::hub::resolve_model;
use mpcformer::model::checkpoint::write_file_atomic;
use mpcformer::model::ModelDir;
use mpcformer::train::distill::{train, TrainOptions};
use mpcformer::train::finetune::{finetune, FinetuneArgs};
use mpcformer::train::recipe::Recipe;

// Training allocates and frees many large tensors per step; glibc returns big blocks to the
// kernel (mmap above 32 MiB, a hard cap), so every step paid page faults and page zeroing.
// mimalloc keeps and reuses freed pages once purging is off (measured: +10% train, +25% eval
// over glibc with mallopt; mimalloc with its default 10 ms purge delay was slower than glibc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    // From the mimalloc library linked by the `mimalloc` crate (mimalloc.h, v2).
    fn mi_option_set(option: i32, value: std::ffi::c_long);
}
/// `mi_option_purge_delay` in mimalloc v2's option enum.
const MI_OPTION_PURGE_DELAY: i32 = 15;

fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator tuning option; no memory is touched.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the message already
/// ends with (typed errors print their I/O cause inline and also expose it as the source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for (i, cause) in e.chain().enumerate() {
        let s = cause.to_string();
        if i > 0 {
            if msg.ends_with(&s) {
                continue;
            }
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    msg
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("setting --threads")?;
    }
    keep_freed_memory();
    match cli.command {
        Command::Finetune(c) => cmd_finetune(c),
        Command::Eval(c) => cmd_eval(c),
        Command::Augment(c) => cmd_augment(c),
        Command::Bench(b) => match b.what {
            BenchWhat::Train(c) => cmd_bench_train(c),
            BenchWhat::Distill(c) => {
                let r = mpcformer::bench::distill_throughput(&c.model, &c.data, c.batch_size, c.steps, c.warmup)?;
                let json = serde_json::to_string_pretty(&r)?;
                if let Some(p) = &c.out {
                    write_file_atomic(p, json.as_bytes())?;
                }
                println!("{json}");
                Ok(())
            }
            BenchWhat::Private(c) => cmd_bench_private(c),
            BenchWhat::Gemm(c) => {
                let shapes = [(128, 768, 768), (128, 768, 3072), (128, 3072, 768), (512, 768, 768), (512, 768, 3072), (512, 3072, 768), (128, 256, 256)];
                let r = mpcformer::bench::ring_gemm(&shapes, c.repeats);
                let json = serde_json::to_string_pretty(&r)?;
                if let Some(p) = &c.out {
                    write_file_atomic(p, json.as_bytes())?;
                }
                println!("{json}");
                Ok(())
            }
        },
        Command::Train(c) => cmd_train(c),
        Command::PrivateEval(c) => cmd_private_eval(c),
        Command::Certs(c) => cmd_certs(c),
        Command::Share(c) => cmd_share(c),
        Command::Party(c) => cmd_party(c),
        Command::Query(c) => cmd_query(c),
    }
}

fn parse_task(s: &str) -> Result<Task> {
    Ok(s.parse::<Task>()?)
}

fn cmd_finetune(c: FinetuneCmd) -> Result<()> {
    let task = parse_task(&c.task)?;
    let model = resolve_model(&c.model)?;
    let stop_after_steps = c.stop_after_steps;
    let args = FinetuneArgs {
        model,
        task,
        data: c.data,
        out: c.out,
        epochs: c.epochs,
        batch_size: c.batch_size,
        lr: c.lr,
        warmup_ratio: c.warmup_ratio,
        weight_decay: c.weight_decay,
        max_grad_norm: c.max_grad_norm,
        max_seq_len: c.max_seq_len,
        seed: c.seed,
        eval_every: c.eval_every,
        eval_batch_size: c.eval_batch_size,
        limit_train: c.limit_train,
        limit_dev: c.limit_dev,
        sample_train: c.sample_train,
        sample_dev: c.sample_dev,
        sample_seed: c.sample_seed,
    };
    let s = finetune(&args, &Device::Cpu, stop_after_steps).with_context(|| format!("fine-tuning into {}", args.out.display()))?;
    println!(
        "best dev {} = {} at step {:?} of {}; {:.1}s training, {:.1} ex/s; model in {}",
        s.primary_metric,
        s.best_metric.map(|v| format!("{v:.4}")).unwrap_or("n/a".into()),
        s.best_step,
        s.total_steps,
        s.train_seconds,
        s.train_examples_per_second,
        args.out.display()
    );
    Ok(())
}

fn cmd_train(c: TrainCmd) -> Result<()> {
    let mut overrides = Vec::new();
    // Named flags are sugar for --set; TOML string quoting keeps any path intact.
    let quoted = |p: &Path| toml::Value::String(p.to_string_lossy().into_owned()).to_string();
    if let Some(t) = &c.teacher {
        overrides.push(format!("teacher={}", quoted(t)));
    }
    if let Some(d) = &c.data {
        overrides.push(format!("data={}", quoted(d)));
    }
    if let Some(o) = &c.out {
        overrides.push(format!("out={}", quoted(o)));
    }
    if let Some(s) = c.seed {
        overrides.push(format!("seed={s}"));
    }
    overrides.extend(c.set.iter().cloned());
    let recipe = Recipe::load(&c.recipe, &overrides)?;
    if !(c.teacher_cache_gib >= 0.0 && c.teacher_cache_gib.is_finite()) {
        bail!("--teacher-cache-gib must be a non-negative number of GiB, got {}", c.teacher_cache_gib);
    }
    let opts = TrainOptions {
        stop_after: c.stop_after_steps,
        teacher_cache_bytes: (c.teacher_cache_gib * (1u64 << 30) as f64) as u64,
    };
    let s = train(&recipe, &Device::Cpu, &opts)
        .with_context(|| format!("training {} into {}", c.recipe.display(), recipe.out.display()))?;
    let fmt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "n/a".into());
    if s.finished {
        println!(
            "best dev {} = {} at stage-2 step {} (teacher {}, ratio {}); stage 1 {:.0}s, stage 2 {:.0}s; model in {}",
            s.primary_metric,
            fmt(s.best_metric),
            s.best_step.map_or_else(|| "n/a".to_string(), |n| n.to_string()),
            fmt(s.teacher_metric),
            fmt(s.fraction_of_teacher),
            s.stage1.as_ref().map_or(0.0, |x| x.seconds),
            s.stage2.seconds,
            recipe.out.display()
        );
    } else {
        println!("stopped at the requested step; rerun the same command to continue ({})", recipe.out.display());
    }
    Ok(())
}

/// What `kd eval` and `kd private-eval` share: the task, the model (its head checked against
/// the task) and the encoded rows (limit, then sample).
fn load_eval_inputs(c: &EvalCmd) -> Result<(Task, std::path::PathBuf, ModelDir, Vec<mpcformer::data::batch::Encoded>)> {
    let task = parse_task(&c.task)?;
    let dir = resolve_model(&c.model)?;
    if !c.data.is_dir() {
        bail!("data directory {} does not exist", c.data.display());
    }
    let md = ModelDir::load(&dir, None, 0, &Device::Cpu).with_context(|| format!("loading model {}", dir.display()))?;
    let want = task.num_labels();
    let have = md.model.num_labels;
    if have != want || md.config.is_regression() != task.is_regression() {
        bail!(
            "{}: model head has {have} output(s){}, task {} needs {want}{}",
            dir.join("config.json").display(),
            if md.config.is_regression() { " (regression)" } else { "" },
            task.name(),
            if task.is_regression() { " (regression)" } else { "" }
        );
    }
    let enc = TextEncoder::load(&dir, c.max_seq_len, md.config.vocab_size)?;
    let mut examples = load_split(task, &c.data, &c.split, c.limit)?;
    if let Some(n) = c.sample {
        examples = mpcformer::data::subsample(examples, n, c.sample_seed);
    }
    let data = enc.encode(&examples)?;
    Ok((task, dir, md, data))
}

fn cmd_augment(c: AugmentCmd) -> Result<()> {
    use mpcformer::data::augment::{augment_file, AugmentOptions};
    let task: Task = c.task.parse()?;
    let opts = AugmentOptions { per_example: c.per_example, replace_prob: c.replace_prob, neighbours: c.neighbours, seed: c.seed };
    let t = Instant::now();
    let stats = augment_file(task, &c.data, &c.split, &c.model, &c.out, &opts)
        .with_context(|| format!("augmenting {} {} into {}", task.name(), c.split, c.out.display()))?;
    eprintln!(
        "{}: {} source rows + {} variants ({} rows short of {}); {} of {} words replaceable, {} distinct; {:.1}s",
        c.out.display(),
        stats.source_rows,
        stats.variants,
        stats.short_rows,
        c.per_example,
        stats.replaceable_words,
        stats.words,
        stats.distinct_replaceable,
        t.elapsed().as_secs_f64()
    );
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "options": opts, "stats": stats }))?);
    Ok(())
}

fn cmd_eval(c: EvalCmd) -> Result<()> {
    let (task, dir, md, data) = load_eval_inputs(&c)?;
    let t = Instant::now();
    let pb = indicatif::ProgressBar::new(data.len() as u64);
    let rows = predict(&md.model, &data, c.batch_size, &Device::Cpu, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    if let Some(p) = &c.predictions {
        write_file_atomic(p, predictions_csv(&rows, task.is_regression()).as_bytes())?;
    }
    let metrics = score(task, &rows).unwrap_or_default();
    let report = EvalReport {
        task: task.name().into(),
        split: c.split.clone(),
        examples: rows.len(),
        metrics,
        model: dir.display().to_string(),
        max_seq_len: c.max_seq_len,
        seconds: secs,
        examples_per_second: rows.len() as f64 / secs.max(1e-9),
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &c.output {
        write_file_atomic(p, json.as_bytes())?;
    }
    if !c.no_results {
        append_results(&c.results, &report, "plain").with_context(|| format!("appending to {}", c.results.display()))?;
    }
    println!("{json}");
    Ok(())
}

fn cmd_bench_train(c: BenchTrainCmd) -> Result<()> {
    let dir = resolve_model(&c.model)?;
    let r = mpcformer::bench::train_throughput(&dir, &c.data, c.batch_size, c.steps, c.warmup, c.eval_repeats)?;
    let json = serde_json::to_string_pretty(&r)?;
    if let Some(p) = &c.out {
        write_file_atomic(Path::new(p), json.as_bytes())?;
    }
    println!("{json}");
    Ok(())
}

/// Refuse when the largest attention score of a plaintext pass reaches the bound of the private
/// attention's narrow truncations (`mpc::bert::SCORE_BITS`); returns it otherwise.
fn enforce_score_bound(what: &str, max_score: f32) -> Result<f32> {
    let bound = (1u64 << mpcformer::mpc::bert::SCORE_BITS) as f32;
    if !max_score.is_finite() || max_score >= bound {
        bail!("{what}: the model's attention scores reach {max_score} on these rows; private inference admits |score| < {bound} (mpc::bert::SCORE_BITS)");
    }
    Ok(max_score)
}

/// `kd share --check-task T --check-data DIR`: the model owner's check of the score bound on
/// representative rows (a deployment has no plaintext twin to check it per query).
fn check_score_bound(
    md: &ModelDir,
    source: &str,
    tokenizer: Option<&std::path::Path>,
    task: &str,
    data: &std::path::Path,
    limit: Option<usize>,
    max_seq_len: usize,
) -> Result<()> {
    let task = parse_task(task)?;
    let tok = tokenizer.ok_or_else(|| anyhow::anyhow!("--check-task needs a tokenizer (--model's directory or --tokenizer)"))?;
    if !data.is_dir() {
        bail!("data directory {} does not exist", data.display());
    }
    let enc = TextEncoder::load(tok, max_seq_len, md.config.vocab_size)?;
    let rows = enc.encode(&load_split(task, data, "dev", limit)?)?;
    let (_, max_score) = predict_with_max_score(&md.model, &rows, 32, &Device::Cpu, |_| {})?;
    let m = enforce_score_bound(source, max_score)?;
    eprintln!(
        "score check: largest attention score {m:.2} over {} {} dev rows (bound {})",
        rows.len(),
        task.name(),
        1u64 << mpcformer::mpc::bert::SCORE_BITS
    );
    Ok(())
}

/// `kd private-eval`: the plaintext pass and the private pass on the same rows.
///
/// With `--output F`, every finished row is appended to the journal `F.rows.jsonl` (its first
/// line identifies the run: model path and a hash of its config and weights, task, split, row
/// selection, length, precision, a hash of the token ids and the executor's schedule version, so
/// rows of different protocol schedules never mix). Started again with the same arguments after an interruption, the command
/// keeps the journaled rows and runs only the rest; the journal is removed once F is written.
fn cmd_private_eval(c: PrivateEvalCmd) -> Result<()> {
    use mpcformer::mpc::eval::{report, run_private, DoneRow, PrivateRow, PrivateRun};
    let frac_bits = c.frac_bits;
    let c = c.eval;
    let (task, dir, md, data) = load_eval_inputs(&c)?;
    let t = Instant::now();
    let (plain, max_score) = predict_with_max_score(&md.model, &data, c.batch_size, &Device::Cpu, |_| {})?;
    let plain_secs = t.elapsed().as_secs_f64();
    // The private attention truncates scores in a ring sized for |s| < 2^SCORE_BITS: refuse,
    // rather than return garbage, when the plaintext twin exceeds it on these rows.
    enforce_score_bound(&dir.display().to_string(), max_score)?;
    let rows: Vec<PrivateRow> =
        data.iter().map(|e| PrivateRow { ids: e.ids.clone(), type_ids: e.type_ids.clone() }).collect();
    let journal = c.output.as_ref().map(|p| {
        let mut name = p.file_name().unwrap_or_default().to_os_string();
        name.push(".rows.jsonl");
        p.with_file_name(name)
    });
    let key = serde_json::json!({
        "model": dir.display().to_string(), "task": task.name(), "split": c.split, "limit": c.limit,
        "sample": c.sample, "sample_seed": c.sample_seed, "max_seq_len": c.max_seq_len,
        "frac_bits": frac_bits, "rows": rows.len(), "ids_hash": ids_hash(&rows),
        "weights_hash": weights_hash(&dir)?, "schedule": mpcformer::mpc::SCHEDULE_VERSION,
    });
    let mut done: std::collections::BTreeMap<usize, DoneRow> = Default::default();
    if let Some(j) = journal.as_ref().filter(|j| j.exists()) {
        done = read_journal(j, &key)?;
        eprintln!("{}: resuming, {} of {} rows already done", j.display(), done.len(), rows.len());
    }
    let todo: Vec<usize> = (0..rows.len()).filter(|i| !done.contains_key(i)).collect();
    let sub: Vec<PrivateRow> = todo.iter().map(|&i| rows[i].clone()).collect();
    let writer = match &journal {
        Some(j) => {
            let fresh = !j.exists();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(j)
                .with_context(|| format!("opening the journal {}", j.display()))?;
            if fresh {
                use std::io::Write;
                writeln!(f, "{}", serde_json::json!({ "journal": key }))?;
                f.sync_data()?;
            }
            Some(std::sync::Arc::new(std::sync::Mutex::new(f)))
        }
        None => None,
    };
    let pb = indicatif::ProgressBar::new(rows.len() as u64);
    pb.set_position(done.len() as u64);
    let (pb2, todo2, writer2) = (pb.clone(), todo.clone(), writer.clone());
    let failed: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let failed2 = failed.clone();
    let sink = std::sync::Arc::new(move |d: DoneRow| {
        pb2.inc(1);
        if let Some(w) = &writer2 {
            use std::io::Write;
            let d = DoneRow { row: todo2[d.row], ..d };
            let line = serde_json::to_string(&d).expect("a row serialises");
            let mut f = w.lock().expect("journal");
            if let Err(e) = writeln!(f, "{line}").and_then(|_| f.sync_data()) {
                failed2.lock().expect("journal").get_or_insert(e.to_string());
            }
        }
    });
    let t = Instant::now();
    let run = run_private(&md, &sub, frac_bits, sink).with_context(|| format!("private inference of {}", dir.display()))?;
    pb.finish_and_clear();
    if let Some(e) = failed.lock().expect("journal").take() {
        bail!("writing the journal {}: {e}", journal.as_ref().map(|j| j.display().to_string()).unwrap_or_default());
    }
    let secs = t.elapsed().as_secs_f64();
    let resumed_rows = done.len();
    for (k, (l, r)) in run.logits.iter().zip(&run.rows).enumerate() {
        done.insert(todo[k], DoneRow { row: todo[k], logits: l.clone(), stats: r.clone() });
    }
    let run = PrivateRun {
        logits: done.values().map(|d| d.logits.clone()).collect(),
        rows: done.values().map(|d| d.stats.clone()).collect(),
        ..run
    };
    let private_rows: Vec<mpcformer::eval::PredRow> = data
        .iter()
        .zip(&run.logits)
        .map(|(e, l)| mpcformer::eval::PredRow {
            index: e.index,
            label: e.label,
            logits: l.iter().map(|&v| v as f32).collect(),
        })
        .collect();
    if let Some(p) = &c.predictions {
        write_file_atomic(p, predictions_csv(&private_rows, task.is_regression()).as_bytes())?;
    }
    let plain_logits: Vec<Vec<f32>> = plain.iter().map(|r| r.logits.clone()).collect();
    let mpc = report(&run, &plain_logits, task.is_regression(), frac_bits, plain_secs);
    let base = EvalReport {
        task: task.name().into(),
        split: c.split.clone(),
        examples: private_rows.len(),
        metrics: score(task, &private_rows).unwrap_or_default(),
        model: dir.display().to_string(),
        max_seq_len: c.max_seq_len,
        seconds: secs,
        examples_per_second: private_rows.len() as f64 / secs.max(1e-9),
    };
    let mut json = serde_json::to_value(&base)?;
    json["mpc"] = serde_json::to_value(&mpc)?;
    json["mpc"]["resumed_rows"] = resumed_rows.into();
    json["mpc"]["schedule_version"] = mpcformer::mpc::SCHEDULE_VERSION.into();
    json["mpc"]["max_abs_attention_score"] = (max_score as f64).into();
    json["plaintext_metrics"] = serde_json::to_value(score(task, &plain).unwrap_or_default())?;
    let text = serde_json::to_string_pretty(&json)?;
    if let Some(p) = &c.output {
        write_file_atomic(p, text.as_bytes())?;
    }
    if let Some(j) = &journal {
        std::fs::remove_file(j).with_context(|| format!("removing the finished journal {}", j.display()))?;
    }
    if !c.no_results {
        append_results(&c.results, &base, "private").with_context(|| format!("appending to {}", c.results.display()))?;
    }
    println!("{text}");
    Ok(())
}

/// FNV-1a over every row's token ids and type ids: the journal's check that it belongs to the
/// same rows.
fn ids_hash(rows: &[mpcformer::mpc::eval::PrivateRow]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in rows {
        for &v in r.ids.iter().chain(&r.type_ids).chain(std::iter::once(&u32::MAX)) {
            for b in v.to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    format!("{h:016x}")
}

/// FNV-1a over the model directory's config.json and model.safetensors: a journal must not
/// be resumed with different weights saved at the same path.
fn weights_hash(dir: &Path) -> Result<String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in ["config.json", "model.safetensors"] {
        let p = dir.join(f);
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        for b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    Ok(format!("{h:016x}"))
}

/// The rows a `kd private-eval` journal holds, after checking that it was written by the same
/// run. A torn last line (the process died while writing it) is dropped; any other bad line is
/// an error naming it.
fn read_journal(path: &Path, key: &serde_json::Value) -> Result<std::collections::BTreeMap<usize, mpcformer::mpc::eval::DoneRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the journal {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let head: serde_json::Value = lines
        .first()
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("{}: line 1 is not a journal header", path.display()))?;
    if head.get("journal") != Some(key) {
        bail!(
            "{} belongs to a different private-eval ({}), not to this one ({key}); remove it or choose another --output",
            path.display(),
            head.get("journal").cloned().unwrap_or_default()
        );
    }
    let mut done = std::collections::BTreeMap::new();
    for (i, l) in lines.iter().enumerate().skip(1) {
        match serde_json::from_str::<mpcformer::mpc::eval::DoneRow>(l) {
            Ok(d) if d.row < key["rows"].as_u64().unwrap_or(0) as usize => {
                done.insert(d.row, d);
            }
            Ok(d) => bail!("{}:{}: row {} is outside the run's {} rows", path.display(), i + 1, d.row, key["rows"]),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                // Cut it off, so that the rows appended next start on a line of their own.
                eprintln!("{}:{}: dropping an incomplete last line", path.display(), i + 1);
                let keep = text.rfind('\n').map_or(0, |p| p + 1) as u64;
                let f = std::fs::OpenOptions::new().write(true).open(path)?;
                f.set_len(keep).with_context(|| format!("truncating {}", path.display()))?;
                f.sync_data()?;
            }
            Err(e) => bail!("{}:{}: not a journaled row: {e}", path.display(), i + 1),
        }
    }
    Ok(done)
}

/// `kd bench private`: a matrix of shapes × sequence lengths × variants, written after each run.
/// Print one private-bench result, append it, and rewrite --out (and its markdown) so an
/// interrupted matrix keeps what it measured.
fn record_private(all: &mut Vec<mpcformer::bench::PrivateModelBench>, r: mpcformer::bench::PrivateModelBench, what: &str, c: &BenchPrivateCmd) -> Result<()> {
    eprintln!(
        "{what} {}: online {:.2}s offline {:.2}s, {} rounds, {:.1} MB/party (+{:.1} MB client), diff {:.1e}",
        r.variant,
        r.full.online_seconds,
        r.full.offline_seconds,
        r.full.rounds,
        r.full.bytes_per_party as f64 / 1e6,
        r.full.client_bytes_per_party as f64 / 1e6,
        r.max_abs_logit_diff_vs_plaintext
    );
    all.push(r);
    if let Some(p) = &c.out {
        write_file_atomic(p, serde_json::to_string_pretty(&all)?.as_bytes())?;
        if c.markdown {
            write_file_atomic(&p.with_extension("md"), mpcformer::bench::private_markdown(all).as_bytes())?;
        }
    }
    Ok(())
}

fn cmd_bench_private(c: BenchPrivateCmd) -> Result<()> {
    use mpcformer::model::{HiddenAct, SoftmaxAct};
    if let Some(dir) = &c.model {
        let md = ModelDir::load(dir, None, 0, &Device::Cpu).with_context(|| format!("loading model {}", dir.display()))?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        let mut all = Vec::new();
        for &seq in &c.seq_len {
            let r = mpcformer::bench::private_model_dir(&name, &md, seq, c.frac_bits).with_context(|| format!("{name} seq {seq}"))?;
            record_private(&mut all, r, &format!("{name} seq {seq}"), &c)?;
        }
        println!("{}", mpcformer::bench::private_markdown(&all));
        return Ok(());
    }
    let shapes: Vec<(String, (usize, usize, usize))> = if c.preset.is_empty() {
        vec![("custom".into(), (c.layers, c.hidden, c.heads))]
    } else {
        c.preset
            .iter()
            .map(|n| mpcformer::bench::preset(n).map(|s| (n.clone(), s)).ok_or_else(|| anyhow::anyhow!("unknown preset '{n}' (tiny, mini, small, base)")))
            .collect::<Result<_>>()?
    };
    let variants: Vec<(HiddenAct, SoftmaxAct)> = if c.variants.is_empty() {
        vec![(c.act.parse().map_err(anyhow::Error::msg)?, c.softmax.parse().map_err(anyhow::Error::msg)?)]
    } else {
        c.variants
            .iter()
            .map(|v| {
                let (a, s) = v.split_once('+').ok_or_else(|| anyhow::anyhow!("variant '{v}' is not ACT+SOFTMAX"))?;
                Ok((a.parse().map_err(anyhow::Error::msg)?, s.parse().map_err(anyhow::Error::msg)?))
            })
            .collect::<Result<_>>()?
    };
    let mut all = Vec::new();
    for (name, (layers, hidden, heads)) in &shapes {
        for &seq in &c.seq_len {
            for &(act, sm) in &variants {
                let r = mpcformer::bench::private_model(name, *layers, *hidden, *heads, c.vocab, seq, act, sm, c.frac_bits)
                    .with_context(|| format!("{name} seq {seq} {}+{}", act.name(), sm.name()))?;
                record_private(&mut all, r, &format!("{name} seq {seq}"), &c)?;
            }
        }
    }
    println!("{}", mpcformer::bench::private_markdown(&all));
    Ok(())
}

fn cmd_certs(c: CertsCmd) -> Result<()> {
    let files = mpcformer::deploy::certs::make_certs(&c.out, c.days)?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

/// `kd share`: the model owner's step (a checkpoint, or a random preset for benchmarks).
fn cmd_share(c: ShareCmd) -> Result<()> {
    use mpcformer::model::BertConfig;
    let (md, source, tokenizer) = match (&c.model, &c.preset) {
        (Some(dir), _) => {
            let md = ModelDir::load(dir, None, 0, &Device::Cpu).with_context(|| format!("loading model {}", dir.display()))?;
            (md, dir.display().to_string(), Some(c.tokenizer.clone().unwrap_or_else(|| dir.clone())))
        }
        (None, Some(name)) => {
            let (layers, hidden, heads) = mpcformer::bench::preset(name)
                .ok_or_else(|| anyhow::anyhow!("unknown preset '{name}' (tiny, mini, small, base)"))?;
            let mut cfg = BertConfig::tiny(layers, hidden, heads, c.vocab);
            cfg.hidden_act = c.act.parse().map_err(anyhow::Error::msg)?;
            cfg.softmax_act = c.softmax.parse().map_err(anyhow::Error::msg)?;
            let labels: Vec<String> = (0..c.labels).map(|i| i.to_string()).collect();
            cfg.set_labels(&labels, false);
            let md = ModelDir::random(cfg, c.labels, c.seed, &Device::Cpu)?;
            (md, format!("random preset {name} ({layers}L/{hidden}), seed {}", c.seed), c.tokenizer.clone())
        }
        (None, None) => bail!("give --model or --preset"),
    };
    if let (Some(t), Some(data)) = (&c.check_task, &c.check_data) {
        check_score_bound(&md, &source, tokenizer.as_deref(), t, data, c.check_limit, c.check_max_seq_len)?;
    }
    let named = mpcformer::mpc::eval::named_parameters(&md)?;
    let s = mpcformer::deploy::bundle::write_bundles(
        &c.out,
        &named,
        &md.config,
        md.model.num_labels,
        tokenizer.as_deref(),
        c.frac_bits,
        &source,
    )?;
    println!(
        "{} tensors ({} parameters) shared at {} fractional bits; {:.1} MB of shares; model {}; bundles in {}/{{public,p0,p1}}",
        s.tensors,
        s.parameters,
        c.frac_bits,
        s.share_bytes as f64 / 1e6,
        s.manifest.fingerprint,
        c.out.display()
    );
    if tokenizer.is_none() {
        eprintln!("note: no --tokenizer; the public bundle cannot tokenise text for `kd query`");
    }
    Ok(())
}

fn cmd_party(c: PartyCmd) -> Result<()> {
    use mpcformer::deploy::config::DeployConfig;
    use mpcformer::deploy::server::{DealerServer, PartyServer};
    use mpcformer::mpc::net::Role;
    let role: Role = c.role.parse().map_err(anyhow::Error::msg)?;
    let cfg = DeployConfig::load(&c.config, role)?;
    match role {
        Role::P0 | Role::P1 => PartyServer::new(role, cfg)?.run()?,
        Role::Dealer => DealerServer::new(cfg)?.run()?,
        Role::Client => bail!("--role client: the client is `kd query`"),
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `kd query`: the client side of a deployment.
fn cmd_query(c: QueryCmd) -> Result<()> {
    use mpcformer::data::Example;
    use mpcformer::deploy::client::Client;
    use mpcformer::deploy::config::DeployConfig;
    use mpcformer::mpc::net::Role;
    let cfg = DeployConfig::load(&c.config, Role::Client)?;
    let client = Client::new(cfg)?;
    let pm = client.public.clone();
    let enc = TextEncoder::load(&pm.dir, c.max_seq_len, pm.config.vocab_size)
        .with_context(|| format!("the public bundle {} needs the model's tokenizer", pm.dir.display()))?;
    let names = pm.config.label_names();
    let regression = pm.config.is_regression();
    let (task, examples) = match (&c.text, &c.task) {
        (Some(t), _) => (None, vec![Example { index: 0, text_a: t.clone(), text_b: c.text_pair.clone(), label: None }]),
        (None, Some(task)) => {
            let task = parse_task(task)?;
            let data = c.data.as_ref().expect("clap: --task requires --data");
            if task.num_labels() != pm.manifest.num_labels {
                bail!("task {} has {} labels, the shared model {}", task.name(), task.num_labels(), pm.manifest.num_labels);
            }
            (Some(task), load_split(task, data, &c.split, c.limit)?)
        }
        (None, None) => bail!("give --text or --task"),
    };
    let rows = enc.encode(&examples)?;
    let mut queries = Vec::new();
    let mut preds = Vec::new();
    for e in &rows {
        for rep in 0..c.repeat.max(1) {
            let r = client.infer(&e.ids, &e.type_ids).with_context(|| format!("private inference of row {}", e.index))?;
            let lf: Vec<f32> = r.logits.iter().map(|&v| v as f32).collect();
            let k = mpcformer::eval::argmax(&lf);
            let shown = if regression { format!("score {:.4}", r.logits[0]) } else { format!("{} ({k})", names.get(k).cloned().unwrap_or_default()) };
            let p0 = r.parties[0].as_ref();
            eprintln!(
                "row {} [{}]: {shown}; {} tokens, {:.3} s (queued {:.3} s){}",
                e.index,
                rep,
                e.ids.len(),
                r.wall_seconds,
                r.queued_seconds,
                p0.map(|s| format!(", {} rounds, {:.1} MB to the peer", s.rounds, s.bytes_sent as f64 / 1e6)).unwrap_or_default()
            );
            if rep == 0 {
                preds.push(mpcformer::eval::PredRow { index: e.index, label: e.label, logits: lf.clone() });
            }
            queries.push(serde_json::json!({
                "index": e.index,
                "repeat": rep,
                "seq_len": e.ids.len(),
                "logits": r.logits,
                "prediction": if regression { serde_json::Value::Null } else { k.into() },
                "prediction_name": if regression { serde_json::Value::Null } else { names.get(k).cloned().into() },
                "label": e.label,
                "wall_seconds": r.wall_seconds,
                "queued_seconds": r.queued_seconds,
                "p0": r.parties[0],
                "p1": r.parties[1],
            }));
        }
    }
    let walls: Vec<f64> = queries.iter().filter_map(|q| q["wall_seconds"].as_f64()).collect();
    let party: Vec<f64> = queries.iter().filter_map(|q| q["p0"]["seconds"].as_f64()).collect();
    let mut out = serde_json::json!({
        "model": {"fingerprint": pm.manifest.fingerprint, "source": pm.manifest.source, "frac_bits": pm.manifest.frac_bits},
        "max_seq_len": c.max_seq_len,
        "queries": queries,
        "summary": {
            "queries": walls.len(),
            "median_wall_seconds": median(&walls),
            "median_p0_forward_seconds": median(&party),
        },
    });
    if let Some(task) = task {
        out["task"] = task.name().into();
        out["split"] = c.split.clone().into();
        out["metrics"] = serde_json::to_value(score(task, &preds).unwrap_or_default())?;
    }
    let text = serde_json::to_string_pretty(&out)?;
    if let Some(p) = &c.output {
        write_file_atomic(p, text.as_bytes())?;
    }
    if c.text.is_some() && !regression {
        // The answer for one text: label and class probabilities.
        let l = &rows_logits(&out);
        let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = l.iter().map(|v| (v - m).exp()).sum();
        let probs: Vec<String> = l.iter().map(|v| format!("{:.4}", (v - m).exp() / z)).collect();
        let k = out["queries"][0]["prediction"].as_u64().unwrap_or(0) as usize;
        println!("label: {} ({k}); probabilities [{}]; logits {:?}", names.get(k).cloned().unwrap_or_default(), probs.join(", "), l);
    } else {
        println!("{text}");
    }
    Ok(())
}

fn rows_logits(out: &serde_json::Value) -> Vec<f64> {
    out["queries"][0]["logits"].as_array().map(|a| a.iter().filter_map(|v| v.as_f64()).collect()).unwrap_or_default()
}
