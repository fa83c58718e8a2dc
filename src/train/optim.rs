//! Adam-family optimisers that update parameters in place, plus learning-rate schedules.
//!
//! candle's stock `AdamW` builds about a dozen temporary tensors per parameter per step, which on
//! a 2-core CPU costs as much as a small model's forward pass. Here each parameter's update is one
//! fused, parallel pass over (param, grad, m, v) through candle's in-place op API.
//!
//! Two flavours share the kernel:
//! - [`AdamKind::AdamW`]: torch.optim.AdamW (bias-corrected, eps outside the sqrt, decoupled decay
//!   `p ← p − lr·wd·p`), with HF's global-norm gradient clipping;
//! - [`AdamKind::BertAdam`]: BERT's original optimiser as MPCFormer uses it (spec §2.2): no bias
//!   correction, eps 1e-6, decay added to the update before the LR multiply, and per-tensor
//!   gradient clipping.
//!
//! Weight decay is skipped for biases and LayerNorm parameters, as in HF and MPCFormer.

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Storage, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdamKind {
    AdamW,
    BertAdam,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    pub kind: AdamKind,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Max gradient norm (global for AdamW, per tensor for BertAdam); ≤ 0 disables clipping.
    pub max_grad_norm: f64,
}

impl AdamConfig {
    pub fn adamw() -> Self {
        Self { kind: AdamKind::AdamW, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, max_grad_norm: 1.0 }
    }
    pub fn bert_adam() -> Self {
        Self { kind: AdamKind::BertAdam, beta1: 0.9, beta2: 0.999, eps: 1e-6, weight_decay: 0.01, max_grad_norm: 1.0 }
    }
}

/// No weight decay on biases and LayerNorm parameters.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    m: Vec<f32>,
    v: Vec<f32>,
}

pub struct Adam {
    cfg: AdamConfig,
    params: Vec<Param>,
    step: u64,
}

/// What one step saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    pub grad_norm: f64,
    pub params_with_grad: usize,
}

struct Kernel<'a> {
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    k: Coefs,
}

#[derive(Clone, Copy)]
struct Coefs {
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    wd: f32,
    gscale: f32,
    bc1: f32,
    bc2: f32,
    bert: bool,
}

fn contiguous_f32<'s>(s: &'s CpuStorage, l: &Layout) -> Result<&'s [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("adam: expected contiguous f32 storage"),
    }
}

impl InplaceOp2 for Kernel<'_> {
    fn name(&self) -> &'static str {
        "adam-step"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let g = contiguous_f32(s2, l2)?;
        let p = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &mut v[a..b],
            _ => candle_core::bail!("adam: parameter must be contiguous f32"),
        };
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if p.len() != g.len() || m.len() != g.len() {
            candle_core::bail!("adam: size mismatch param {} grad {} state {}", p.len(), g.len(), m.len())
        }
        const CH: usize = 1 << 14;
        let k = self.k;
        p.par_chunks_mut(CH)
            .zip(g.par_chunks(CH))
            .zip(m.par_chunks_mut(CH))
            .zip(v.par_chunks_mut(CH))
            .for_each(|(((p, g), m), v)| {
                for i in 0..p.len() {
                    let gi = g[i] * k.gscale;
                    m[i] = k.b1 * m[i] + (1.0 - k.b1) * gi;
                    v[i] = k.b2 * v[i] + (1.0 - k.b2) * gi * gi;
                    if k.bert {
                        let upd = m[i] / (v[i].sqrt() + k.eps) + k.wd * p[i];
                        p[i] -= k.lr * upd;
                    } else {
                        p[i] -= k.lr * k.wd * p[i];
                        let mh = m[i] / k.bc1;
                        let vh = v[i] / k.bc2;
                        p[i] -= k.lr * mh / (vh.sqrt() + k.eps);
                    }
                }
            });
        Ok(())
    }
}

fn sum_sq(t: &Tensor) -> Result<f64> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => {
            let x = contiguous_f32(c, l)?;
            Ok(x.par_chunks(1 << 14).map(|c| c.iter().map(|&a| (a as f64) * (a as f64)).sum::<f64>()).sum())
        }
        _ => candle_core::bail!("adam: only CPU tensors are supported"),
    }
}

impl Adam {
    /// `vars` in a fixed order (their names decide weight decay).
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamConfig) -> Self {
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let n = var.elem_count();
                Param { decay: decays(&name), name, var, m: vec![0.0; n], v: vec![0.0; n] }
            })
            .collect();
        Self { cfg, params, step: 0 }
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<StepStats> {
        self.step += 1;
        let c = self.cfg;
        let mut norms = Vec::with_capacity(self.params.len());
        for p in &self.params {
            norms.push(match grads.get(p.var.as_tensor()) {
                Some(g) => Some(sum_sq(g)?.sqrt()),
                None => None,
            });
        }
        let total = norms.iter().flatten().map(|n| n * n).sum::<f64>().sqrt();
        let global_scale = if c.kind == AdamKind::AdamW && c.max_grad_norm > 0.0 && total > c.max_grad_norm {
            c.max_grad_norm / (total + 1e-6)
        } else {
            1.0
        };
        let (bc1, bc2) = match c.kind {
            AdamKind::AdamW => (1.0 - c.beta1.powi(self.step as i32), 1.0 - c.beta2.powi(self.step as i32)),
            AdamKind::BertAdam => (1.0, 1.0),
        };
        let mut with_grad = 0;
        for (p, norm) in self.params.iter_mut().zip(&norms) {
            let (Some(g), Some(norm)) = (grads.get(p.var.as_tensor()), norm) else { continue };
            with_grad += 1;
            let gscale = match c.kind {
                AdamKind::AdamW => global_scale,
                // torch.nn.utils.clip_grad_norm_(p, max) on each tensor separately.
                AdamKind::BertAdam if c.max_grad_norm > 0.0 && *norm > c.max_grad_norm => c.max_grad_norm / (norm + 1e-6),
                AdamKind::BertAdam => 1.0,
            };
            let g = g.contiguous()?;
            let k = Coefs {
                lr: lr as f32,
                b1: c.beta1 as f32,
                b2: c.beta2 as f32,
                eps: c.eps as f32,
                wd: if p.decay { c.weight_decay as f32 } else { 0.0 },
                gscale: gscale as f32,
                bc1: bc1 as f32,
                bc2: bc2 as f32,
                bert: c.kind == AdamKind::BertAdam,
            };
            let kernel = Kernel { m: RefCell::new(&mut p.m), v: RefCell::new(&mut p.v), k };
            p.var.as_tensor().inplace_op2(&g, &kernel)?;
        }
        Ok(StepStats { grad_norm: total, params_with_grad: with_grad })
    }

    /// Moment buffers as named tensors (`m.<param>`, `v.<param>`) for checkpointing.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let dev = candle_core::Device::Cpu;
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for p in &self.params {
            let shape = p.var.as_tensor().shape().clone();
            out.push((format!("m.{}", p.name), Tensor::from_slice(&p.m, shape.clone(), &dev)?));
            out.push((format!("v.{}", p.name), Tensor::from_slice(&p.v, shape, &dev)?));
        }
        out.push(("step".into(), Tensor::new(&[self.step as f64], &dev)?));
        Ok(out)
    }

    /// Restore moment buffers saved by [`Adam::state_tensors`].
    pub fn load_state(&mut self, mut get: impl FnMut(&str) -> Option<Tensor>) -> Result<()> {
        for p in &mut self.params {
            for (key, buf) in [("m", &mut p.m), ("v", &mut p.v)] {
                let name = format!("{key}.{}", p.name);
                let t = get(&name).ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {name}")))?;
                let vals: Vec<f32> = t.flatten_all()?.to_vec1()?;
                if vals.len() != buf.len() {
                    candle_core::bail!("optimizer state {name} has {} values, expected {}", vals.len(), buf.len());
                }
                *buf = vals;
            }
        }
        let step = get("step").ok_or_else(|| candle_core::Error::Msg("optimizer state lacks step".into()))?;
        self.step = step.to_vec1::<f64>()?[0] as u64;
        Ok(())
    }
}

/// Learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant,
    /// Linear warmup over `warmup` (fraction of total steps), then linear decay to 0 at `total`.
    WarmupLinear { warmup: f64 },
    /// BertAdam's `warmup_linear` (MPCFormer/TinyBERT): with p = step/total, p/warmup while
    /// p < warmup, then max((p − 1)/(warmup − 1), 0). Differs from `WarmupLinear` only in not
    /// rounding the warmup length to whole steps.
    BertWarmupLinear { warmup: f64 },
}

impl Schedule {
    /// Multiplier of the base LR at optimizer step `step` (0-based) of `total`.
    pub fn factor(&self, step: u64, total: u64) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::WarmupLinear { warmup } => {
                let total = total.max(1) as f64;
                let warm = (warmup * total).ceil();
                let s = step as f64;
                if s < warm {
                    s / warm.max(1.0)
                } else {
                    ((total - s) / (total - warm).max(1.0)).max(0.0)
                }
            }
            Schedule::BertWarmupLinear { warmup } => {
                let p = step as f64 / total.max(1) as f64;
                if p < warmup {
                    p / warmup
                } else {
                    ((p - 1.0) / (warmup - 1.0)).max(0.0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Reference AdamW on plain f64 vectors (the torch.optim.AdamW update rule).
    fn reference_adamw(p: &mut [f64], gs: &[Vec<f64>], lr: f64, wd: f64) {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        let mut m = vec![0.0; p.len()];
        let mut v = vec![0.0; p.len()];
        for (t, g) in gs.iter().enumerate() {
            let t = t as i32 + 1;
            for i in 0..p.len() {
                p[i] -= lr * wd * p[i];
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let mh = m[i] / (1.0 - b1.powi(t));
                let vh = v[i] / (1.0 - b2.powi(t));
                p[i] -= lr * mh / (vh.sqrt() + eps);
            }
        }
    }

    #[test]
    fn adamw_matches_reference_update_rule() {
        let dev = Device::Cpu;
        let init = [0.5f32, -1.0, 2.0, 0.0];
        let var = Var::from_slice(&init, 4, &dev).unwrap();
        let mut cfg = AdamConfig::adamw();
        cfg.max_grad_norm = 0.0;
        let mut opt = Adam::new(vec![("w.weight".into(), var.clone())], cfg);
        let target = Tensor::new(&[1f32, 1.0, -1.0, 0.5], &dev).unwrap();
        let mut ref_p: Vec<f64> = init.iter().map(|&x| x as f64).collect();
        let mut gs = Vec::new();
        for _ in 0..5 {
            // loss = sum((w − target)²) ⇒ grad = 2(w − target)
            let loss = (var.as_tensor() - &target).unwrap().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let g: Vec<f32> = grads.get(var.as_tensor()).unwrap().to_vec1().unwrap();
            gs.push(g.iter().map(|&x| x as f64).collect::<Vec<_>>());
            // replay the reference from the start with the same gradient sequence
            let mut p: Vec<f64> = init.iter().map(|&x| x as f64).collect();
            reference_adamw(&mut p, &gs, 1e-2, 0.01);
            ref_p = p;
            opt.step(&grads, 1e-2).unwrap();
        }
        let got: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        for (a, b) in got.iter().zip(&ref_p) {
            assert!((*a as f64 - b).abs() < 1e-5, "{got:?} vs {ref_p:?}");
        }
    }

    #[test]
    fn global_clipping_scales_the_gradient() {
        let dev = Device::Cpu;
        let var = Var::zeros(3, DType::F32, &dev).unwrap();
        let mut opt = Adam::new(vec![("x.weight".into(), var.clone())], AdamConfig::adamw());
        let loss = (var.as_tensor() * Tensor::new(&[30f32, 40.0, 0.0], &dev).unwrap()).unwrap().sum_all().unwrap();
        let s = opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        assert!((s.grad_norm - 50.0).abs() < 1e-4);
        // m after one step = (1−β1)·g·(1/50): checked through the saved state.
        let st = opt.state_tensors().unwrap();
        let m: Vec<f32> = st[0].1.to_vec1().unwrap();
        assert!((m[0] - 0.1 * 0.6).abs() < 1e-6 && (m[1] - 0.1 * 0.8).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn bert_adam_has_no_bias_correction_and_skips_decay_on_bias() {
        let dev = Device::Cpu;
        let w = Var::from_slice(&[1f32], 1, &dev).unwrap();
        let b = Var::from_slice(&[1f32], 1, &dev).unwrap();
        let mut opt =
            Adam::new(vec![("l.weight".into(), w.clone()), ("l.bias".into(), b.clone())], AdamConfig::bert_adam());
        let loss = ((w.as_tensor() * 0.5).unwrap() + (b.as_tensor() * 0.5).unwrap()).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        // m = 0.05, v = 0.00025 ⇒ m/(√v+1e-6) ≈ 3.1621; weight also gets wd·p = 0.01.
        let upd = 0.05 / (0.00025f64.sqrt() + 1e-6);
        let wv = w.as_tensor().to_vec1::<f32>().unwrap()[0] as f64;
        let bv = b.as_tensor().to_vec1::<f32>().unwrap()[0] as f64;
        assert!((wv - (1.0 - 0.1 * (upd + 0.01))).abs() < 1e-5, "{wv}");
        assert!((bv - (1.0 - 0.1 * upd)).abs() < 1e-5, "{bv}");
    }

    #[test]
    fn state_round_trip() {
        let dev = Device::Cpu;
        let w = Var::from_slice(&[1f32, 2.0], 2, &dev).unwrap();
        let mut opt = Adam::new(vec![("a.weight".into(), w.clone())], AdamConfig::adamw());
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        let saved: std::collections::HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        let mut fresh = Adam::new(vec![("a.weight".into(), w.clone())], AdamConfig::adamw());
        fresh.load_state(|n| saved.get(n).cloned()).unwrap();
        assert_eq!(fresh.steps_taken(), 1);
        assert_eq!(fresh.params[0].m, opt.params[0].m);
    }

    #[test]
    fn warmup_linear_schedule() {
        let s = Schedule::WarmupLinear { warmup: 0.1 };
        assert_eq!(s.factor(0, 100), 0.0);
        assert!((s.factor(5, 100) - 0.5).abs() < 1e-12);
        assert!((s.factor(10, 100) - 1.0).abs() < 1e-12);
        assert!((s.factor(55, 100) - 0.5).abs() < 1e-12);
        assert_eq!(s.factor(100, 100), 0.0);
        assert_eq!(Schedule::Constant.factor(7, 10), 1.0);
    }

    #[test]
    fn bert_warmup_linear_matches_the_reference_formula() {
        // TinyBERT/MPCFormer: warmup_linear(x, w) = x/w if x < w else max((x-1)/(w-1), 0),
        // evaluated at x = step/t_total with the 0-based step.
        let s = Schedule::BertWarmupLinear { warmup: 0.1 };
        let total = 37;
        for step in 0..=total {
            let x = step as f64 / total as f64;
            let want = if x < 0.1 { x / 0.1 } else { ((x - 1.0) / (0.1 - 1.0)).max(0.0) };
            assert!((s.factor(step, total) - want).abs() < 1e-12, "step {step}");
        }
        // 37 steps: warmup ends at 3.7 steps, which WarmupLinear rounds up to 4.
        assert!((s.factor(3, 37) - (3.0 / 37.0) / 0.1).abs() < 1e-12);
        assert!((Schedule::WarmupLinear { warmup: 0.1 }.factor(3, 37) - 0.75).abs() < 1e-12);
    }
}
