//! Fine-tuning mechanics against HF transformers + torch.optim.AdamW: from the same start (MiniLM
//! with the golden head, dropout off) and the same four SST-2 batches, `kd`'s loss, gradient norm,
//! schedule, AdamW update (decay groups, clipping) and resulting model must match
//! `tests/golden/minilm_train_steps.json`, made by `scripts/make_train_golden.py`.

mod common;

use candle_core::Device;
use mpcformer::data::batch::{collate, Encoded, TextEncoder};
use mpcformer::data::{load_split, Task};
use mpcformer::eval::task_loss;
use mpcformer::model::checkpoint::sorted_vars;
use mpcformer::model::Mode;
use mpcformer::train::optim::{Adam, AdamConfig, Schedule};
use serde_json::Value;

#[test]
fn four_adamw_steps_match_transformers() {
    let g: Value = serde_json::from_str(include_str!("golden/minilm_train_steps.json")).unwrap();
    let (dir, md) = common::minilm_with_golden_head(|c| {
        c["hidden_dropout_prob"] = 0.0.into();
        c["attention_probs_dropout_prob"] = 0.0.into();
    });
    let dev = Device::Cpu;
    let enc = TextEncoder::load(dir.path(), 128, md.config.vocab_size).unwrap();
    let rows: Vec<Encoded> =
        enc.encode(&load_split(Task::Sst2, &common::glue("SST-2"), "train", Some(24)).unwrap()).unwrap();
    let mut opt = Adam::new(sorted_vars(&md.varmap), AdamConfig::adamw());
    let total = g["steps_total"].as_u64().unwrap();
    let warm = g["warmup_steps"].as_f64().unwrap() / total as f64;
    let sched = Schedule::WarmupLinear { warmup: warm };
    let lr0 = g["lr"].as_f64().unwrap();
    for s in g["steps"].as_array().unwrap() {
        let step = s["step"].as_u64().unwrap();
        let items: Vec<&Encoded> = s["rows"].as_array().unwrap().iter().map(|i| &rows[i.as_u64().unwrap() as usize]).collect();
        let batch = collate(&items, &dev).unwrap();
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let out = md.model.forward(&batch.input, &mut Mode::Train(&mut rng)).unwrap();
        let loss = task_loss(&out.logits, batch.labels.as_ref().unwrap(), false).unwrap();
        let lv = loss.to_scalar::<f32>().unwrap() as f64;
        let grads = loss.backward().unwrap();
        let lr = lr0 * sched.factor(step, total);
        assert!((lr - s["lr"].as_f64().unwrap()).abs() < 1e-12, "step {step}: lr {lr} vs {}", s["lr"]);
        let st = opt.step(&grads, lr).unwrap();
        assert!((lv - s["loss"].as_f64().unwrap()).abs() < 2e-5, "step {step}: loss {lv} vs {}", s["loss"]);
        let gn = s["grad_norm"].as_f64().unwrap();
        assert!((st.grad_norm - gn).abs() < 1e-3 * gn, "step {step}: grad norm {} vs {gn}", st.grad_norm);
    }
    let items: Vec<&Encoded> = rows[..8].iter().collect();
    let batch = collate(&items, &dev).unwrap();
    let logits = md.model.forward(&batch.input, &mut Mode::Eval).unwrap().logits.to_vec2::<f32>().unwrap();
    for (r, (ours, theirs)) in logits.iter().zip(g["probe_logits_after"].as_array().unwrap()).enumerate() {
        for (a, b) in ours.iter().zip(theirs.as_array().unwrap()) {
            let b = b.as_f64().unwrap();
            assert!((*a as f64 - b).abs() < 2e-4, "row {r}: logit {a} vs {b}");
        }
    }
    let vars: std::collections::HashMap<String, candle_core::Var> = sorted_vars(&md.varmap).into_iter().collect();
    for (name, vals) in g["params_after_first16"].as_object().unwrap() {
        let ours: Vec<f32> = vars[name].as_tensor().flatten_all().unwrap().narrow(0, 0, 16).unwrap().to_vec1().unwrap();
        for (i, (a, b)) in ours.iter().zip(vals.as_array().unwrap()).enumerate() {
            let b = b.as_f64().unwrap();
            assert!((*a as f64 - b).abs() < 2e-5, "{name}[{i}]: {a} vs {b}");
        }
    }
}
