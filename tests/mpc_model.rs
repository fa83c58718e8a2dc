//! The whole private model (client-masked embeddings, encoder, pooler, classifier) against its
//! plaintext twin, layer by layer, for the exact baseline and the MPC-friendly variants.

use candle_core::{DType, Device, Tensor};
use mpcformer::model::bert::ModelInput;
use mpcformer::model::{BertConfig, HiddenAct, ModelDir, Mode, SoftmaxAct};
use mpcformer::mpc::bert::share_weights;
use mpcformer::mpc::eval::named_parameters;
use mpcformer::mpc::fixed::decode;
use mpcformer::mpc::model::{client_session, PrivateBert, Trace};
use mpcformer::mpc::party::LayerClass;
use mpcformer::mpc::run::run_with_client;

const F: u32 = 16;

fn check(act: HiddenAct, sm: SoftmaxAct, tol: f64) {
    check_at(act, sm, tol, F)
}

fn check_at(act: HiddenAct, sm: SoftmaxAct, tol: f64, f: u32) {
    let dev = Device::Cpu;
    let (layers, hidden, heads, vocab, l) = (2, 32, 4, 97, 9);
    let mut cfg = BertConfig::tiny(layers, hidden, heads, vocab);
    cfg.hidden_act = act;
    cfg.softmax_act = sm;
    let md = ModelDir::random(cfg.clone(), 3, 11, &dev).unwrap();
    // BERT init (std 0.02) makes attention nearly uniform and activations tiny; larger weights
    // exercise the nonlinearities over a wide range.
    for (_, var) in mpcformer::model::checkpoint::sorted_vars(&md.varmap) {
        let t = var.as_tensor();
        if t.rank() == 2 {
            var.set(&(t * 8.0).unwrap()).unwrap();
        }
    }
    let ids: Vec<u32> = (0..l as u32).map(|i| (i * 37 + 5) % vocab as u32).collect();
    let types: Vec<u32> = (0..l as u32).map(|i| (i >= 5) as u32).collect();
    let input = ModelInput {
        input_ids: Tensor::from_vec(ids.clone(), (1, l), &dev).unwrap(),
        token_type_ids: Tensor::from_vec(types.clone(), (1, l), &dev).unwrap(),
        attention_mask: Tensor::ones((1, l), DType::F32, &dev).unwrap(),
    };
    let out = md.model.forward_with(&input, &mut Mode::Eval, true).unwrap();
    let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };

    let shares = std::sync::Arc::new(share_weights(&named_parameters(&md).unwrap(), &cfg, f));
    let cfg2 = cfg.clone();
    let types2 = types.clone();
    let rows = vec![ids.clone()];
    let ((o0, p0), (o1, _), dealer, client) = run_with_client(
        move |p| {
            let m = PrivateBert::prepare(p, &shares[p.id], &cfg2, f).unwrap();
            let mut tr = Trace::default();
            let logits = m.forward(p, &types2, Some(&mut tr)).unwrap();
            let mut all: Vec<_> = tr.hidden_states.into_iter().map(|s| s.ring).collect();
            all.push(tr.pooled.unwrap().ring);
            all.push(logits.ring);
            all
        },
        move |links| client_session(links, &rows, vocab, 3, f).unwrap(),
    );
    let names: Vec<String> = (0..=layers)
        .map(|i| if i == 0 { "embeddings".to_string() } else { format!("layer {}", i - 1) })
        .chain(["pooler".to_string(), "logits".to_string()])
        .collect();
    let mut wants: Vec<Vec<f32>> = out.hidden_states.iter().map(flat).collect();
    wants.push(flat(&out.pooled));
    wants.push(flat(&out.logits));
    let mut report = Vec::new();
    for (k, (name, want)) in names.iter().zip(&wants).enumerate() {
        let got = o0[k].add(&o1[k]);
        assert_eq!(got.len(), want.len(), "{name}: size");
        let worst = got.data.iter().zip(want).map(|(&g, &w)| (decode(g, f) - w as f64).abs()).fold(0.0, f64::max);
        report.push(format!("{name} {worst:.1e}"));
        assert!(worst < tol, "{act:?}+{sm:?} {name}: max |private − plaintext| = {worst} ({report:?})");
    }
    // The client reconstructs the same logits.
    for (a, b) in client[0].iter().zip(&wants.last().unwrap()[..]) {
        assert!((a - *b as f64).abs() < tol);
    }
    // Embedding: no party-to-party traffic beyond its LayerNorm; the client uploads X − A.
    let emb = &p0.stats[&LayerClass::Embedding];
    let ln_rounds = p0.stats[&LayerClass::LayerNorm].rounds / (2 * layers as u64);
    assert_eq!(emb.rounds, 1 + ln_rounds, "one client flight + the embedding LayerNorm");
    assert_eq!(emb.client_bytes, 8 * (l * vocab) as u64 + 16, "X − A and the seed");
    assert!(p0.stats[&LayerClass::Classifier].client_bytes == 8 * 3);
    assert!(dealer.bytes_sent > 0);
    eprintln!("{act:?}+{sm:?}: {report:?}; rounds {}", p0.totals().rounds);
}

#[test]
fn exact_gelu_softmax_model_matches_plaintext() {
    check(HiddenAct::Gelu, SoftmaxAct::Softmax, 1e-2);
}

#[test]
fn gelu_new_softmax_model_matches_plaintext() {
    check(HiddenAct::GeluNew, SoftmaxAct::Softmax, 1e-2);
}

#[test]
fn quad_2quad_model_matches_plaintext() {
    check(HiddenAct::Quad, SoftmaxAct::TwoQuad, 1e-2);
}

#[test]
fn quad_softmax_and_gelu_2quad_models_match_plaintext() {
    check(HiddenAct::Quad, SoftmaxAct::Softmax, 1e-2);
    check(HiddenAct::Gelu, SoftmaxAct::TwoQuad, 1e-2);
}

#[test]
fn relu_2relu_model_matches_plaintext() {
    check(HiddenAct::Relu, SoftmaxAct::TwoRelu, 2e-2);
}

#[test]
fn out_of_vocabulary_token_is_a_clear_error() {
    let cfg = BertConfig::tiny(1, 16, 2, 10);
    let md = ModelDir::random(cfg, 2, 1, &Device::Cpu).unwrap();
    let rows = vec![mpcformer::mpc::eval::PrivateRow { ids: vec![1, 12, 3], type_ids: vec![0; 3] }];
    let e = mpcformer::mpc::eval::run_private(&md, &rows, F, std::sync::Arc::new(|_| {})).err().expect("must fail");
    assert!(e.to_string().contains("token id 12"), "{e}");
}

/// At 20 fractional bits an untruncated square times a reciprocal with 8 extra bits would sit at
/// scale 3f + 8 = 68 > 62 (2Quad), and 2ReLU's extra bits at 2f + 28 = 68: both must adapt.
#[test]
fn approximations_hold_at_18_and_20_fractional_bits() {
    // 18: 2Quad's reciprocal takes 7 extra bits; 20: q is truncated with its row sums.
    check_at(HiddenAct::Quad, SoftmaxAct::TwoQuad, 2e-3, 18);
    check_at(HiddenAct::Quad, SoftmaxAct::TwoQuad, 2e-3, 20);
    check_at(HiddenAct::Relu, SoftmaxAct::TwoRelu, 2e-3, 20);
    check_at(HiddenAct::Gelu, SoftmaxAct::Softmax, 2e-3, 20);
}
