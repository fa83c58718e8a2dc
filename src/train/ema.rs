//! Exponential moving average of a model's weights (Polyak–Ruppert averaging, as in
//! `torch.optim.swa_utils.AveragedModel` with an EMA update): `avg ← d·avg + (1 − d)·w` after
//! every `every`-th optimizer step. Used in stage 2 of `kd train` (`stage2.ema` in the recipe),
//! where dev evaluation, best-checkpoint selection and the saved student use the average.
//!
//! Why: on small dev sets (CoLA's 1,043 rows) the raw stage-2 weights' dev metric swings by
//! several points between evaluations, so the best checkpoint is the maximum of a noisy series;
//! the average moves slowly and its series is the smoother, more typical value.

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use candle_nn::VarMap;

use crate::model::checkpoint::sorted_vars;

/// The average's file inside a run's `train_state/`.
pub const EMA_FILE: &str = "ema.safetensors";

/// The averaged weights, by variable name (a fixed, sorted order).
pub struct WeightEma {
    decay: f64,
    every: u64,
    names: Vec<String>,
    avg: Vec<Tensor>,
}

impl std::fmt::Debug for WeightEma {
    // Names and hyperparameters only: the tensors are the model's size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightEma").field("decay", &self.decay).field("every", &self.every).field("tensors", &self.names.len()).finish()
    }
}

impl WeightEma {
    /// Start the average at the model's current weights.
    pub fn new(varmap: &VarMap, decay: f64, every: u64) -> Result<Self> {
        // detach(): arithmetic on a variable's tensor records a backprop graph, and each new
        // average would keep the previous one (and its inputs) alive: memory grows every step.
        let (names, avg) = sorted_vars(varmap).into_iter().map(|(n, v)| Ok((n, v.as_tensor().detach().copy()?))).collect::<Result<(Vec<_>, Vec<_>)>>()?;
        Ok(Self { decay, every, names, avg })
    }

    /// Continue from a saved average (`tensors()`); every variable of the model must be there
    /// with its shape.
    pub fn from_saved(varmap: &VarMap, decay: f64, every: u64, saved: &HashMap<String, Tensor>) -> std::result::Result<Self, String> {
        let mut names = vec![];
        let mut avg = vec![];
        for (n, v) in sorted_vars(varmap) {
            let t = saved.get(&n).ok_or_else(|| format!("the saved average has no tensor {n}"))?;
            if t.dims() != v.as_tensor().dims() {
                return Err(format!("saved average {n} has shape {:?}, the model {:?}", t.dims(), v.as_tensor().dims()));
            }
            names.push(n);
            avg.push(t.detach());
        }
        if saved.len() != names.len() {
            return Err(format!("the saved average has {} tensors, the model {}", saved.len(), names.len()));
        }
        Ok(Self { decay, every, names, avg })
    }

    /// Fold in the model's weights after optimizer step `step` (1-based) when it is due.
    pub fn after_step(&mut self, varmap: &VarMap, step: u64) -> Result<()> {
        if !step.is_multiple_of(self.every) {
            return Ok(());
        }
        let vars = sorted_vars(varmap);
        for ((_, v), a) in vars.iter().zip(self.avg.iter_mut()) {
            *a = ((&*a * self.decay)? + (v.as_tensor().detach() * (1.0 - self.decay))?)?.detach();
        }
        Ok(())
    }

    /// Put the average into the model and return the weights it replaced (for `restore`).
    pub fn swap_in(&self, varmap: &VarMap) -> Result<Vec<Tensor>> {
        let mut live = Vec::with_capacity(self.avg.len());
        for ((_, v), a) in sorted_vars(varmap).iter().zip(&self.avg) {
            live.push(v.as_tensor().detach().copy()?);
            v.set(a)?;
        }
        Ok(live)
    }

    /// Put back the weights `swap_in` returned.
    pub fn restore(varmap: &VarMap, live: &[Tensor]) -> Result<()> {
        for ((_, v), w) in sorted_vars(varmap).iter().zip(live) {
            v.set(w)?;
        }
        Ok(())
    }

    /// The average by variable name, for the resume point.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.names.iter().cloned().zip(self.avg.iter().cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn varmap(values: &[(&str, Vec<f32>)]) -> VarMap {
        let vm = VarMap::new();
        for (n, v) in values {
            let t = Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap();
            vm.data().lock().unwrap().insert(n.to_string(), candle_core::Var::from_tensor(&t).unwrap());
        }
        vm
    }

    fn get(vm: &VarMap, n: &str) -> Vec<f32> {
        vm.data().lock().unwrap()[n].as_tensor().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
    }

    fn set(vm: &VarMap, n: &str, v: &[f32]) {
        vm.data().lock().unwrap()[n].set(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap();
    }

    /// The average after a sequence of weights equals the closed form
    /// d^k·w0 + Σ (1−d)·d^(k−i)·w_i over the due steps only, and swap_in/restore round-trip.
    #[test]
    fn average_matches_the_closed_form_and_swaps_back() {
        let vm = varmap(&[("b", vec![1.0, -2.0]), ("a", vec![0.5])]);
        let (d, every) = (0.75, 2);
        let mut ema = WeightEma::new(&vm, d, every).unwrap();
        let mut expect_a = 0.5f64;
        for step in 1..=6u64 {
            let w = step as f32;
            set(&vm, "a", &[w]);
            set(&vm, "b", &[w, -w]);
            ema.after_step(&vm, step).unwrap();
            if step % every == 0 {
                expect_a = d * expect_a + (1.0 - d) * w as f64;
            }
        }
        // No backprop graph hangs off the average (it would chain every past average).
        assert!(ema.avg.iter().all(|t| !t.track_op()));
        let live = ema.swap_in(&vm).unwrap();
        assert!((get(&vm, "a")[0] as f64 - expect_a).abs() < 1e-6);
        // b started at (1, −2) and then followed (w, −w): its average differs from a's.
        let b = get(&vm, "b");
        assert!((b[0] as f64 - (expect_a + d.powi(3) * 0.5)).abs() < 1e-6, "{b:?}");
        WeightEma::restore(&vm, &live).unwrap();
        assert_eq!(get(&vm, "a"), vec![6.0]);
        assert_eq!(get(&vm, "b"), vec![6.0, -6.0]);

        // Saved and reloaded, the average continues identically.
        let again = WeightEma::from_saved(&vm, d, every, &ema.tensors()).unwrap();
        assert_eq!(again.tensors().len(), 2);
        for (n, t) in again.tensors() {
            assert_eq!(t.to_vec1::<f32>().unwrap(), ema.tensors()[&n].to_vec1::<f32>().unwrap());
        }
        let mut missing = ema.tensors();
        missing.remove("a");
        assert!(WeightEma::from_saved(&vm, d, every, &missing).unwrap_err().contains("no tensor a"));
    }
}
