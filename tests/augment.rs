//! `kd augment`: word-substitution variants of a task's rows as a distillation transfer set.
//! Oracles: a brute-force cosine search over MiniLM's embedding table (written here from the
//! safetensors file and vocab.txt, not through the crate), the GLUE reader for the written file,
//! and a row-by-row comparison of each variant with its source.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use mpcformer::data::augment::{replaceable, split_word, Neighbours};
use mpcformer::data::glue::read_tsv;
use mpcformer::data::Task;

fn kd(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd")).args(args).current_dir(cwd).output().expect("kd runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Cosine similarities of `query` (token ids, averaged) against every whole-word ASCII token.
fn brute_force(table: &[f32], h: usize, vocab: &[String], query: &[usize]) -> Vec<(String, f64)> {
    let row = |i: usize| &table[i * h..(i + 1) * h];
    let mut q = vec![0f64; h];
    for &i in query {
        for (a, &b) in q.iter_mut().zip(row(i)) {
            *a += b as f64 / query.len() as f64;
        }
    }
    let qn = q.iter().map(|x| x * x).sum::<f64>().sqrt();
    vocab
        .iter()
        .enumerate()
        .filter(|(_, t)| (t.len() >= 2 || *t == "a" || *t == "i") && t.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(|(i, t)| {
            let r = row(i);
            let dot: f64 = q.iter().zip(r).map(|(a, &b)| a * b as f64).sum();
            let rn = r.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
            (t.clone(), dot / (qn * rn))
        })
        .collect()
}

#[test]
fn neighbours_are_the_nearest_embedding_rows() {
    let model = common::minilm();
    let tensors = candle_core::safetensors::load(model.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let emb = &tensors["embeddings.word_embeddings.weight"];
    let h = emb.dims()[1];
    let table: Vec<f32> = emb.flatten_all().unwrap().to_vec1().unwrap();
    let vocab: Vec<String> = std::fs::read_to_string(model.join("vocab.txt")).unwrap().lines().map(String::from).collect();
    let id: HashMap<&str, usize> = vocab.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();

    let k = 10;
    // "Buy," is one piece (its core, lower-cased); "unbuyable" is several (un ##buy ##able).
    let nb = Neighbours::build(&model, ["Buy,", "analysis", "unbuyable", "3", "don't"], k).unwrap();
    assert_eq!(nb.len(), 3, "only the ASCII-letter cores get neighbours");
    assert!(nb.of("3").is_none() && nb.of("don't").is_none());
    assert_eq!(nb.of("BUY"), nb.of("buy"), "lookup ignores case");
    for (word, pieces) in [("buy", vec!["buy"]), ("analysis", vec!["analysis"]), ("unbuyable", vec!["un", "##bu", "##ya", "##ble"])] {
        let q: Vec<usize> = pieces.iter().map(|p| *id.get(p).unwrap_or_else(|| panic!("{p} not in vocab"))).collect();
        let mut all = brute_force(&table, h, &vocab, &q);
        all.retain(|(t, _)| t != word);
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        let kth = all[k - 1].1;
        let sim: HashMap<&str, f64> = all.iter().map(|(t, s)| (t.as_str(), *s)).collect();
        let got = nb.of(word).unwrap();
        assert_eq!(got.len(), k);
        assert_eq!(got[0], all[0].0, "{word}: nearest {:?}, expected {:?}", got, &all[..k]);
        for g in &got {
            // f32 against f64 sums may swap near-ties at the boundary, nothing more.
            assert!(sim[g] >= kth - 1e-5, "{word}: {g} ({}) is not among the {k} nearest {:?}", sim[g], &all[..k]);
        }
        assert!(!got.contains(&word));
    }
}

#[test]
fn tokenizer_pieces_of_the_multi_piece_word_are_what_the_oracle_assumes() {
    let model = common::minilm();
    let enc = mpcformer::data::batch::TextEncoder::load(&model, 128, 30522).unwrap();
    let vocab = enc.vocab();
    let want: Vec<u32> = ["un", "##bu", "##ya", "##ble"].iter().map(|p| vocab[*p]).collect();
    assert_eq!(enc.pieces("unbuyable").unwrap(), want);
    assert_eq!(enc.pieces("Buy").unwrap(), vec![vocab["buy"]]);
}

/// Every variant row sits after its source, keeps every column but the texts, has as many
/// words, and differs only where a replaceable core was swapped for one of its neighbours.
fn check_variants(task: Task, src: &Path, out: &Path, nb: &Neighbours, per_example: usize) -> usize {
    let source = read_tsv(task, src, false, None).unwrap();
    let rows = read_tsv(task, out, false, None).unwrap();
    let raw_src: Vec<String> = std::fs::read_to_string(src).unwrap().trim_start_matches('\u{feff}').lines().map(String::from).collect();
    let raw_out: Vec<String> = std::fs::read_to_string(out).unwrap().lines().map(String::from).collect();
    let header = usize::from(task != Task::Cola);
    assert_eq!(raw_out[..header], raw_src[..header], "header kept");
    let text_cols: &[usize] = match task {
        Task::Cola => &[3],
        Task::Mrpc => &[3, 4],
        _ => unreachable!(),
    };
    let mut at = 0;
    let mut variants = 0;
    for (j, (s, raw)) in source.iter().zip(&raw_src[header..]).enumerate() {
        assert_eq!(&raw_out[header + at], raw, "source row {j} copied verbatim, in order");
        assert_eq!((&rows[at].text_a, &rows[at].text_b), (&s.text_a, &s.text_b));
        at += 1;
        let next = raw_src.get(header + j + 1);
        let mut seen = std::collections::HashSet::new();
        while at < rows.len() && Some(&raw_out[header + at]) != next {
            let v = &rows[at];
            let vraw = &raw_out[header + at];
            for (i, (c, sc)) in vraw.split('\t').zip(raw.split('\t')).enumerate() {
                assert!(text_cols.contains(&i) || c == sc, "column {i} of a variant of row {j} changed: {vraw:?} vs {raw:?}");
            }
            assert_eq!(v.label, s.label);
            assert!((&v.text_a, &v.text_b) != (&s.text_a, &s.text_b), "variant equals its source");
            assert!(seen.insert((v.text_a.clone(), v.text_b.clone())), "duplicate variant {v:?}");
            for (orig, var) in std::iter::once((&s.text_a, &v.text_a)).chain(s.text_b.iter().zip(v.text_b.iter())) {
                let (ow, vw): (Vec<&str>, Vec<&str>) = (orig.split_whitespace().collect(), var.split_whitespace().collect());
                assert_eq!(ow.len(), vw.len(), "{orig:?} -> {var:?}");
                for (o, w) in ow.iter().zip(&vw) {
                    if o == w {
                        continue;
                    }
                    let ((op, oc, os), (wp, wc, ws)) = (split_word(o), split_word(w));
                    assert!(replaceable(oc), "{o:?} is not replaceable but became {w:?}");
                    assert_eq!((op, os), (wp, ws), "punctuation of {o:?} changed in {w:?}");
                    let lower = wc.to_ascii_lowercase();
                    assert!(nb.of(oc).unwrap().contains(&lower.as_str()), "{w:?} is not a neighbour of {o:?}");
                    assert_eq!(oc.starts_with(|c: char| c.is_ascii_uppercase()), wc.starts_with(|c: char| c.is_ascii_uppercase()));
                }
            }
            at += 1;
            variants += 1;
        }
        assert!(seen.len() <= per_example, "row {j}: {} variants", seen.len());
    }
    assert_eq!(at, rows.len(), "every written row is a source row or one of its variants");
    variants
}

#[test]
fn augmented_files_read_back_with_their_sources_and_are_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let model = common::minilm();
    let m = model.to_str().unwrap();
    for (task, dir) in [(Task::Cola, "CoLA"), (Task::Mrpc, "MRPC")] {
        let data = common::glue(dir);
        let out = |name: &str, seed: &str| {
            let o = kd(
                &["augment", "--task", task.name(), "--data", data.to_str().unwrap(), "--split", "dev", "--model", m, "--out", name, "--per-example", "3", "--seed", seed],
                t.path(),
            );
            assert!(o.status.success(), "{}", text(&o));
            let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            (t.path().join(name), stats)
        };
        let (a, stats) = out("a.tsv", "7");
        let src = data.join("dev.tsv");
        let n = read_tsv(task, &src, false, None).unwrap().len();
        let words: Vec<String> = read_tsv(task, &src, false, None)
            .unwrap()
            .into_iter()
            .flat_map(|e| {
                let mut v: Vec<String> = e.text_a.split_whitespace().map(String::from).collect();
                v.extend(e.text_b.iter().flat_map(|b| b.split_whitespace().map(String::from).collect::<Vec<_>>()));
                v
            })
            .collect();
        let nb = Neighbours::build(&model, words.iter().map(String::as_str), 15).unwrap();
        let variants = check_variants(task, &src, &a, &nb, 3);
        assert_eq!(stats["stats"]["source_rows"], n);
        assert_eq!(stats["stats"]["variants"], variants);
        assert!(variants >= 3 * n * 9 / 10, "{task:?}: {variants} variants of {n} rows");
        let (b, _) = out("b.tsv", "7");
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same seed, same file");
        let (c, _) = out("c.tsv", "8");
        assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap(), "another seed, other variants");
    }
}

#[test]
fn bad_augment_inputs_fail_with_a_named_cause() {
    let t = tempfile::tempdir().unwrap();
    let m = common::minilm();
    let cola = common::glue("CoLA");
    let run = |extra: &[&str], task: &str, data: &Path| {
        let mut a = vec!["augment", "--task", task, "--data", data.to_str().unwrap(), "--model", m.to_str().unwrap(), "--out", "o.tsv"];
        a.extend(extra);
        kd(&a, t.path())
    };
    let cases: [(Output, &str); 4] = [
        (run(&["--replace-prob", "0"], "cola", &cola), "--replace-prob"),
        (run(&[], "imdb", &common::assets().join("data/imdb")), "imdb"),
        (run(&["--split", "test"], "cola", &cola), "unlabeled split"),
        (run(&["--split", "nosuch"], "cola", &cola), "nosuch"),
    ];
    for (i, (o, want)) in cases.iter().enumerate() {
        assert!(!o.status.success(), "case {i} succeeded");
        assert!(text(o).contains(want), "case {i}: {}", text(o));
    }
    assert!(!t.path().join("o.tsv").exists(), "nothing written on error");
    let bad = t.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("train.tsv"), "s\t1\t\tfine.\ns\t1\tbroken\n").unwrap();
    let o = run(&[], "cola", &bad);
    assert!(!o.status.success() && text(&o).contains("train.tsv:2"), "{}", text(&o));
}

/// A recipe's `transfer_file` replaces the train split; recipes whose stage 2 would read its
/// copied labels are refused.
#[test]
fn train_distills_on_a_transfer_file_and_refuses_label_objectives() {
    let t = tempfile::tempdir().unwrap();
    // A teacher needs a task head; its quality does not matter here.
    let teacher = common::minilm_variant(|c| c["num_labels"] = 2.into());
    let m = teacher.path();
    let sst2 = common::glue("SST-2");
    let o = kd(
        &["augment", "--task", "sst2", "--data", sst2.to_str().unwrap(), "--split", "dev", "--model", m.to_str().unwrap(), "--out", "aug.tsv", "--per-example", "2"],
        t.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let rows = read_tsv(Task::Sst2, &t.path().join("aug.tsv"), false, None).unwrap().len();
    let recipe = |objective: &str, task: &str| {
        format!(
            r#"task = "{task}"
teacher = "{}"
data = "{}"
transfer_file = "aug.tsv"
out = "o"
batch_size = 16
eval_batch_size = 32
limit_dev = 16

[student]
hidden_act = "quad"
softmax_act = "2quad"
layers = 2

[stage2]
objective = "{objective}"
epochs = 0.02
eval_every = 100
optimizer = {{ kind = "bertadam", lr = 1e-5, schedule = {{ kind = "constant" }} }}
"#,
            m.display(),
            sst2.display()
        )
    };
    std::fs::write(t.path().join("ok.toml"), recipe("distill", "sst2")).unwrap();
    let o = kd(&["train", "--recipe", "ok.toml"], t.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("{rows} train / 16 dev rows")), "{}", text(&o));
    let saved = std::fs::read_to_string(t.path().join("o/recipe.toml")).unwrap();
    assert!(saved.contains("transfer_file = \"aug.tsv\""), "{saved}");
    for (i, (objective, task, want)) in [("labels", "sst2", "objective = \"labels\""), ("distill", "stsb", "STS-B")].iter().enumerate() {
        let f = format!("bad{i}.toml");
        std::fs::write(t.path().join(&f), recipe(objective, task)).unwrap();
        let o = kd(&["train", "--recipe", &f], t.path());
        assert!(!o.status.success(), "case {i} succeeded");
        assert!(text(&o).contains("transfer_file") && text(&o).contains(want) && text(&o).contains(&f), "case {i}: {}", text(&o));
    }
}
