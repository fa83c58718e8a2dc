//! A private encoder layer against its plaintext twin (`model::bert::BertLayer`) on the same
//! weights and input, for Quad+2Quad and ReLU+2ReLU.

use candle_core::{DType, Device, Tensor};
use mpcformer::model::bert::Masks;
use mpcformer::model::checkpoint::sorted_vars;
use mpcformer::model::{BertConfig, HiddenAct, ModelDir, Mode, SoftmaxAct};
use mpcformer::mpc::bert::{share_weights, PrivateLayer};
use mpcformer::mpc::fixed::{decode, encode};
use mpcformer::mpc::party::{LayerClass, Share};
use mpcformer::mpc::ring::RingTensor;
use mpcformer::mpc::run::{run_local, share_public};

const F: u32 = 16;

fn check(act: HiddenAct, sm: SoftmaxAct) {
    let dev = Device::Cpu;
    let mut cfg = BertConfig::tiny(1, 32, 4, 50);
    cfg.hidden_act = act;
    cfg.softmax_act = sm;
    let md = ModelDir::random(cfg.clone(), 2, 17, &dev).unwrap();
    // BERT init (std 0.02) makes attention nearly uniform; larger weights exercise it.
    let mut named = Vec::new();
    for (name, var) in sorted_vars(&md.varmap) {
        let t = var.as_tensor();
        if t.rank() == 2 {
            var.set(&(t * 10.0).unwrap()).unwrap();
        }
        let t = var.as_tensor();
        named.push((name, t.dims().to_vec(), t.flatten_all().unwrap().to_vec1::<f32>().unwrap()));
    }
    let l = 6;
    let xs: Vec<f32> = (0..l * 32).map(|i| (((i * 7919) % 61) as f32 - 30.0) / 15.0).collect();
    let x = Tensor::from_vec(xs.clone(), (1, l, 32), &dev).unwrap();
    let masks = Masks::new(&Tensor::ones((1, l), DType::F32, &dev).unwrap(), DType::F32).unwrap();
    let (want, _) = md.model.bert.layers[0].forward(&x, &masks, &mut Mode::Eval, false).unwrap();
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();

    let shares = share_weights(&named, &cfg, F);
    let xr = RingTensor::new(&[l, 32], xs.iter().map(|&v| encode(v as f64, F)).collect());
    let xsh = share_public(&xr);
    let xsh = [xsh.0, xsh.1];
    let cfg2 = cfg.clone();
    let ((o0, p0), (o1, _), d) = run_local(move |p| {
        let layer = PrivateLayer::prepare(p, &shares[p.id], &cfg2, 0, F).unwrap();
        layer.forward(p, &Share { ring: xsh[p.id].clone(), frac: F }).unwrap().ring
    });
    let got = o0.add(&o1);
    let worst = got.data.iter().zip(&want).map(|(&g, &w)| (decode(g, F) - w as f64).abs()).fold(0.0, f64::max);
    assert!(worst < 2e-2, "{act:?}/{sm:?}: max |private − plaintext| = {worst}");
    let t = p0.totals();
    eprintln!(
        "{act:?}/{sm:?}: max abs diff {worst:.2e}, {} rounds, {} bytes (P0), dealer {} bytes; {:?}",
        t.rounds, t.bytes_sent, d.bytes_sent, p0.stats.get(&LayerClass::Softmax)
    );
}

#[test]
fn quad_2quad_layer_matches_plaintext() {
    check(HiddenAct::Quad, SoftmaxAct::TwoQuad);
}

#[test]
fn relu_2relu_layer_matches_plaintext() {
    check(HiddenAct::Relu, SoftmaxAct::TwoRelu);
}
