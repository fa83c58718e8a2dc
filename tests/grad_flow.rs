//! Every trainable tensor must receive a non-zero gradient, for every approximation pair —
//! candle's fused LayerNorm/softmax would silently freeze parameters (candle #3011, #3752).
//! Also: the evaluation path (fused kernels) and the training path (composed ops, dropout 0)
//! compute the same function.

use candle_core::{DType, Device, Tensor};
use mpcformer::model::bert::ModelInput;
use mpcformer::model::checkpoint::sorted_vars;
use mpcformer::model::{BertConfig, HiddenAct, ModelDir, Mode, SoftmaxAct};
use rand::SeedableRng;

fn tiny(act: HiddenAct, sm: SoftmaxAct, dropout: f64) -> BertConfig {
    let mut c = BertConfig::tiny(2, 32, 4, 50);
    c.hidden_act = act;
    c.softmax_act = sm;
    c.hidden_dropout_prob = dropout;
    c.attention_probs_dropout_prob = dropout;
    c
}

fn input(dev: &Device) -> ModelInput {
    // Two rows, the second padded: exercises both mask kinds; both segment ids used.
    ModelInput {
        input_ids: Tensor::new(&[[2u32, 7, 9, 11, 3, 4], [2, 5, 3, 0, 0, 0]], dev).unwrap(),
        token_type_ids: Tensor::new(&[[0u32, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dev).unwrap(),
        attention_mask: Tensor::new(&[[1f32, 1., 1., 1., 1., 1.], [1., 1., 1., 0., 0., 0.]], dev).unwrap(),
    }
}

#[test]
fn every_parameter_gets_a_gradient_for_every_approximation() {
    let dev = Device::Cpu;
    for act in [HiddenAct::Gelu, HiddenAct::GeluNew, HiddenAct::Relu, HiddenAct::Quad] {
        for sm in [SoftmaxAct::Softmax, SoftmaxAct::TwoRelu, SoftmaxAct::TwoQuad] {
            let md = ModelDir::random(tiny(act, sm, 0.1), 2, 7, &dev).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let out = md.model.forward_with(&input(&dev), &mut Mode::Train(&mut rng), true).unwrap();
            let labels = Tensor::new(&[1u32, 0], &dev).unwrap();
            // The fine-tuning loss plus a layer-wise term, as distillation uses both.
            let ce = candle_nn::loss::cross_entropy(&out.logits, &labels).unwrap();
            let hs = out.hidden_states.iter().map(|h| h.sqr().unwrap().mean_all().unwrap()).fold(
                Tensor::zeros((), DType::F32, &dev).unwrap(),
                |a, b| (a + b).unwrap(),
            );
            let loss = (ce + hs).unwrap();
            let grads = loss.backward().unwrap();
            let vars = sorted_vars(&md.varmap);
            assert_eq!(vars.len(), 5 + 16 * 2 + 4, "parameter count of a 2-layer BERT with head");
            for (name, var) in vars {
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{act:?}/{sm:?}: {name} has no gradient"));
                let n: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
                assert!(n > 0.0 && n.is_finite(), "{act:?}/{sm:?}: {name} gradient norm {n}");
            }
        }
    }
}

#[test]
fn eval_path_equals_training_path_without_dropout() {
    let dev = Device::Cpu;
    for sm in [SoftmaxAct::Softmax, SoftmaxAct::TwoRelu, SoftmaxAct::TwoQuad] {
        let md = ModelDir::random(tiny(HiddenAct::Quad, sm, 0.0), 3, 11, &dev).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let a = md.model.forward(&input(&dev), &mut Mode::Eval).unwrap().logits;
        let b = md.model.forward(&input(&dev), &mut Mode::Train(&mut rng)).unwrap().logits;
        let d: f32 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-5, "{sm:?}: {d}");
    }
}

#[test]
fn dropout_changes_training_outputs_but_is_seeded() {
    let dev = Device::Cpu;
    let md = ModelDir::random(tiny(HiddenAct::Gelu, SoftmaxAct::Softmax, 0.1), 2, 5, &dev).unwrap();
    let run = |seed| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        md.model.forward(&input(&dev), &mut Mode::Train(&mut rng)).unwrap().logits.to_vec2::<f32>().unwrap()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    let e1 = md.model.forward(&input(&dev), &mut Mode::Eval).unwrap().logits.to_vec2::<f32>().unwrap();
    assert_ne!(run(1), e1);
}

#[test]
fn random_init_is_seeded_and_bert_like() {
    let dev = Device::Cpu;
    let cfg = tiny(HiddenAct::Gelu, SoftmaxAct::Softmax, 0.1);
    let a = ModelDir::random(cfg.clone(), 2, 9, &dev).unwrap();
    let b = ModelDir::random(cfg, 2, 9, &dev).unwrap();
    for ((n, va), (_, vb)) in sorted_vars(&a.varmap).into_iter().zip(sorted_vars(&b.varmap)) {
        let d: f32 = (va.as_tensor() - vb.as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert_eq!(d, 0.0, "{n} differs between equal seeds");
        let v: Vec<f32> = va.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        if n.contains("LayerNorm.weight") {
            assert!(v.iter().all(|&x| x == 1.0), "{n}");
        } else if n.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{n}");
        } else {
            let sd = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
            assert!((sd - 0.02).abs() < 0.01, "{n}: std {sd}");
        }
    }
}
