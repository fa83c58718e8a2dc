//! GLUE evaluation metrics, matching the reference implementations GLUE results are
//! reported with (HF transformers' `glue_compute_metrics`, built on scikit-learn and SciPy):
//! - accuracy: `sklearn.metrics.accuracy_score`;
//! - F1: `sklearn.metrics.f1_score(average="binary", pos_label=1)` (0 when there are no
//!   positives in either predictions or labels, sklearn's `zero_division` default);
//! - Matthews correlation: `sklearn.metrics.matthews_corrcoef` (multiclass form; 0 when the
//!   denominator is 0);
//! - Pearson / Spearman: `scipy.stats.pearsonr` / `scipy.stats.spearmanr` (ties get
//!   average ranks; NaN for constant input, as SciPy returns).
//!
//! Everything is computed in f64. Length mismatches between predictions and labels are
//! caller bugs and panic.

use std::collections::HashMap;

use crate::data::Task;

/// Metric values of one evaluation; absent metrics are omitted from JSON.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pearson: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spearman: Option<f64>,
}

impl Metrics {
    /// Value of a metric by key: `accuracy`, `f1`, `mcc`, `pearson`, `spearman`, or `corr`
    /// (mean of Pearson and Spearman, the STS-B selection metric).
    pub fn get(&self, key: &str) -> Option<f64> {
        match key {
            "accuracy" => self.accuracy,
            "f1" => self.f1,
            "mcc" => self.mcc,
            "pearson" => self.pearson,
            "spearman" => self.spearman,
            "corr" => Some((self.pearson? + self.spearman?) / 2.0),
            _ => None,
        }
    }

    /// Value of [`Task::primary_metric`]; NaN when that metric was not computed, so it
    /// never wins a "greater than best" comparison.
    pub fn primary(&self, task: Task) -> f64 {
        self.get(task.primary_metric()).unwrap_or(f64::NAN)
    }
}

/// Classification metrics for `task` from class ids: accuracy always, plus F1 (positive
/// class 1) for MRPC/QQP and Matthews correlation for CoLA.
pub fn compute_classification(task: Task, preds: &[usize], labels: &[usize]) -> Metrics {
    Metrics {
        accuracy: Some(accuracy(preds, labels)),
        f1: matches!(task, Task::Mrpc | Task::Qqp).then(|| f1_binary(preds, labels)),
        mcc: matches!(task, Task::Cola).then(|| matthews_corrcoef(preds, labels)),
        ..Metrics::default()
    }
}

/// Regression metrics (STS-B): Pearson and Spearman correlation.
pub fn compute_regression(preds: &[f32], labels: &[f32]) -> Metrics {
    let p: Vec<f64> = preds.iter().map(|&v| v as f64).collect();
    let l: Vec<f64> = labels.iter().map(|&v| v as f64).collect();
    Metrics {
        pearson: Some(pearson(&p, &l)),
        spearman: Some(spearman(&p, &l)),
        ..Metrics::default()
    }
}

fn check_len(a: usize, b: usize) {
    assert_eq!(a, b, "metrics: {a} predictions but {b} labels");
}

/// Fraction of exact matches; NaN for empty input.
pub fn accuracy(preds: &[usize], labels: &[usize]) -> f64 {
    check_len(preds.len(), labels.len());
    if preds.is_empty() {
        return f64::NAN;
    }
    let correct = preds.iter().zip(labels).filter(|(p, l)| p == l).count();
    correct as f64 / preds.len() as f64
}

/// Binary F1 of class 1 (every other id counts as negative): 2tp / (2tp + fp + fn), the
/// form sklearn uses, and 0 when that denominator is 0.
pub fn f1_binary(preds: &[usize], labels: &[usize]) -> f64 {
    check_len(preds.len(), labels.len());
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (&p, &l) in preds.iter().zip(labels) {
        match (p == 1, l == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let denom = 2 * tp + fp + fn_;
    if denom == 0 {
        0.0
    } else {
        (2 * tp) as f64 / denom as f64
    }
}

/// Matthews correlation coefficient in sklearn's multiclass (Gorodkin R_K) form, which
/// reduces to the usual binary formula; 0 when either marginal is constant.
pub fn matthews_corrcoef(preds: &[usize], labels: &[usize]) -> f64 {
    check_len(preds.len(), labels.len());
    // Per-class (true count, predicted count).
    let mut sums: HashMap<usize, (i128, i128)> = HashMap::new();
    let mut correct: i128 = 0;
    for (&p, &l) in preds.iter().zip(labels) {
        sums.entry(l).or_default().0 += 1;
        sums.entry(p).or_default().1 += 1;
        correct += i128::from(p == l);
    }
    let n = preds.len() as i128;
    let (mut tp_dot, mut tt_dot, mut pp_dot) = (0i128, 0i128, 0i128);
    for &(t, p) in sums.values() {
        tp_dot += t * p;
        tt_dot += t * t;
        pp_dot += p * p;
    }
    // Exact integer covariances, so the zero-denominator test is exact.
    let cov_ytyp = correct * n - tp_dot;
    let cov_ypyp = n * n - pp_dot;
    let cov_ytyt = n * n - tt_dot;
    if cov_ypyp == 0 || cov_ytyt == 0 {
        return 0.0;
    }
    cov_ytyp as f64 / (cov_ytyt as f64 * cov_ypyp as f64).sqrt()
}

/// Pearson correlation like `scipy.stats.pearsonr`: NaN when either input is constant
/// or has fewer than 2 values; the result is clipped to [-1, 1].
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    check_len(x.len(), y.len());
    let n = x.len();
    // Constant check on the raw values: a mean that is off by rounding would otherwise
    // turn a constant vector into tiny nonzero deviations and a meaningless r.
    let constant = |v: &[f64]| v.iter().all(|&a| a == v[0]);
    if n < 2 || constant(x) || constant(y) {
        return f64::NAN;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let r = sxy / (sxx.sqrt() * syy.sqrt());
    if r.is_nan() {
        r
    } else {
        r.clamp(-1.0, 1.0)
    }
}

/// 1-based ranks with ties given their average rank (`scipy.stats.rankdata(method="average")`).
/// Inputs must not contain NaN.
pub fn rank_average(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        // Group of equal values; -0.0 and 0.0 compare equal here, as in numpy.
        let mut j = i + 1;
        while j < order.len() && v[order[j]] == v[order[i]] {
            j += 1;
        }
        let avg = (i + 1 + j) as f64 / 2.0; // mean of ranks i+1 ..= j
        for &k in &order[i..j] {
            ranks[k] = avg;
        }
        i = j;
    }
    ranks
}

/// Spearman rank correlation like `scipy.stats.spearmanr`: Pearson on average ranks;
/// NaN if any value is NaN or either input is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    check_len(x.len(), y.len());
    if x.iter().chain(y).any(|v| v.is_nan()) {
        return f64::NAN;
    }
    pearson(&rank_average(x), &rank_average(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    macro_rules! assert_close {
        ($a:expr, $b:expr) => {{
            let (a, b): (f64, f64) = ($a, $b);
            assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
        }};
    }

    #[test]
    fn accuracy_f1_mcc_binary() {
        let preds = [1, 0, 1, 1, 0];
        let labels = [1, 1, 1, 0, 0];
        // tp=2 tn=1 fp=1 fn=1
        assert_close!(accuracy(&preds, &labels), 0.6);
        assert_close!(f1_binary(&preds, &labels), 4.0 / 6.0);
        // (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = 1/6
        assert_close!(matthews_corrcoef(&preds, &labels), 1.0 / 6.0);
        // sklearn docs example: matthews_corrcoef([+1,+1,+1,-1], [+1,-1,+1,+1]) = -0.33...
        assert_close!(matthews_corrcoef(&[1, 0, 1, 1], &[1, 1, 1, 0]), -1.0 / 3.0);
    }

    #[test]
    fn mcc_multiclass() {
        // sklearn's multiclass formula, by hand (t/p = per-class true/predicted counts):
        let labels = [0, 0, 1, 1, 2, 2, 2];
        let preds = [0, 1, 1, 1, 2, 0, 2];
        // t=[2,2,3], p=[2,3,2], correct=5, n=7
        // cov_ytyp = 35 - (4+6+6) = 19; cov_ypyp = 49-17 = 32; cov_ytyt = 49-17 = 32
        assert_close!(matthews_corrcoef(&preds, &labels), 19.0 / 32.0);
        // t=[2,2,2], p=[3,2,1], correct=2, n=6: cov_ytyp = 12 - (6+4+2) = 0
        let labels = [0, 1, 2, 0, 1, 2];
        let preds = [0, 2, 1, 0, 0, 1];
        assert_close!(matthews_corrcoef(&preds, &labels), 0.0);
        // Labels beyond a dense range are fine (no allocation by max id).
        assert_close!(
            matthews_corrcoef(&[usize::MAX, 3, 3], &[usize::MAX, 3, 3]),
            1.0
        );
    }

    #[test]
    fn degenerate_cases() {
        // Constant predictions: MCC denominator 0 -> 0 (sklearn).
        assert_eq!(matthews_corrcoef(&[1, 1, 1, 1], &[0, 1, 0, 1]), 0.0);
        assert_eq!(matthews_corrcoef(&[0, 1, 0, 1], &[1, 1, 1, 1]), 0.0);
        assert_eq!(matthews_corrcoef(&[], &[]), 0.0);
        // No positives anywhere: F1 = 0 (zero_division default).
        assert_eq!(f1_binary(&[0, 0, 0], &[0, 0, 0]), 0.0);
        assert_eq!(f1_binary(&[0, 0, 0], &[1, 0, 1]), 0.0);
        assert_eq!(f1_binary(&[1, 1], &[0, 0]), 0.0);
        assert_eq!(f1_binary(&[1, 0], &[1, 0]), 1.0);
        assert!(accuracy(&[], &[]).is_nan());
        // Constant input: SciPy returns NaN.
        assert!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_nan());
        assert!(pearson(&[0.1; 3], &[1.0, 2.0, 3.0]).is_nan());
        assert!(pearson(&[1.0], &[2.0]).is_nan());
        assert!(spearman(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]).is_nan());
        assert!(spearman(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]).is_nan());
    }

    #[test]
    #[should_panic(expected = "2 predictions but 3 labels")]
    fn length_mismatch_panics() {
        accuracy(&[0, 1], &[0, 1, 1]);
    }

    #[test]
    fn pearson_reference_values() {
        // scipy.stats.pearsonr docs example.
        assert_close!(
            pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[10.0, 9.0, 2.5, 6.0, 4.0]),
            -0.7426106572325057
        );
        // By hand: x-mean = [-2,-1,0,1,2], y-mean = [-2,0,1,0,1]; sxy=6, sxx=10, syy=6
        assert_close!(
            pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 5.0, 4.0, 5.0]),
            6.0 / (10.0f64.sqrt() * 6.0f64.sqrt())
        );
        assert_close!(pearson(&[1.0, 2.0, 3.0], &[-2.0, -4.0, -6.0]), -1.0);
    }

    #[test]
    fn spearman_reference_values_with_ties() {
        // scipy.stats.spearmanr docs example (a tie in y).
        assert_close!(
            spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5.0, 6.0, 7.0, 8.0, 7.0]),
            0.8207826816681233
        );
        assert_eq!(
            rank_average(&[10.0, 20.0, 20.0, 5.0, 20.0]),
            vec![2.0, 4.0, 4.0, 1.0, 4.0]
        );
        // Ties on both sides: ranks x=[1,2.5,2.5,4,5], y=[1,4,2.5,2.5,5];
        // centered: x=[-2,-.5,-.5,1,2], y=[-2,1,-.5,-.5,2]; sxy=7.25, sxx=syy=9.5
        assert_close!(
            spearman(&[1.0, 2.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 2.0, 5.0]),
            7.25 / 9.5
        );
    }

    #[test]
    fn task_metric_selection() {
        let m = compute_classification(Task::Cola, &[1, 0, 1, 1, 0], &[1, 1, 1, 0, 0]);
        assert!(m.mcc.is_some() && m.accuracy.is_some() && m.f1.is_none());
        assert_close!(m.primary(Task::Cola), 1.0 / 6.0);
        let m = compute_classification(Task::Mrpc, &[1, 0, 1, 1, 0], &[1, 1, 1, 0, 0]);
        assert_close!(m.primary(Task::Mrpc), 4.0 / 6.0);
        assert!(m.mcc.is_none());
        let m = compute_classification(Task::Sst2, &[1, 0], &[1, 1]);
        assert_eq!(m.primary(Task::Sst2), 0.5);
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"accuracy":0.5}"#);
        let m = compute_regression(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5.0, 6.0, 7.0, 8.0, 7.0]);
        let p = m.pearson.unwrap();
        let s = m.spearman.unwrap();
        assert_close!(m.primary(Task::Stsb), (p + s) / 2.0);
        assert_close!(s, 0.8207826816681233);
        // A metric the task does not select: NaN primary.
        assert!(Metrics::default().primary(Task::Rte).is_nan());
        let back: Metrics = serde_json::from_str(r#"{"f1":0.25}"#).unwrap();
        assert_eq!(back.get("f1"), Some(0.25));
        assert_eq!(back.get("corr"), None);
    }

    fn ints(max_len: usize) -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec((-100i32..100).prop_map(f64::from), 2..max_len)
    }

    fn pair<T: std::fmt::Debug + Clone>(
        s: impl Strategy<Value = T> + Clone,
        len: std::ops::Range<usize>,
    ) -> impl Strategy<Value = (Vec<T>, Vec<T>)> {
        len.prop_flat_map(move |n| {
            (
                prop::collection::vec(s.clone(), n),
                prop::collection::vec(s.clone(), n),
            )
        })
    }

    fn same_or_both_nan(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12
    }

    proptest! {
        #[test]
        fn spearman_invariant_under_monotone_maps(
            (x, y) in pair((-100i32..100).prop_map(f64::from), 2..40)
        ) {
            let s = spearman(&x, &y);
            // Strictly increasing, exact on these small integers.
            let fx: Vec<f64> = x.iter().map(|v| v * v * v + 3.0 * v - 7.0).collect();
            prop_assert!(same_or_both_nan(spearman(&fx, &y), s));
            // Strictly decreasing map flips the sign.
            let gy: Vec<f64> = y.iter().map(|v| -2.0 * v).collect();
            prop_assert!(same_or_both_nan(spearman(&x, &gy), -s));
        }

        #[test]
        fn pearson_bounded_and_symmetric(
            (x, y) in pair(-1e6f64..1e6, 2..40)
        ) {
            let r = pearson(&x, &y);
            prop_assert!(r.is_nan() || (-1.0..=1.0).contains(&r));
            prop_assert!(same_or_both_nan(r, pearson(&y, &x)));
        }

        #[test]
        fn correlation_of_a_vector_with_itself(x in ints(40)) {
            let constant = x.iter().all(|&v| v == x[0]);
            for r in [pearson(&x, &x), spearman(&x, &x)] {
                if constant {
                    prop_assert!(r.is_nan());
                } else {
                    prop_assert!((r - 1.0).abs() < 1e-12, "r = {}", r);
                }
            }
        }

        #[test]
        fn classification_identity_and_bounds(
            (p, l) in pair(0usize..3, 1..60)
        ) {
            prop_assert_eq!(accuracy(&l, &l), 1.0);
            let distinct = l.iter().any(|&v| v != l[0]);
            let mcc_self = matthews_corrcoef(&l, &l);
            let want = if distinct { 1.0 } else { 0.0 };
            prop_assert!((mcc_self - want).abs() < 1e-12);
            let f1_self = f1_binary(&l, &l);
            prop_assert_eq!(f1_self, if l.contains(&1) { 1.0 } else { 0.0 });

            let a = accuracy(&p, &l);
            let f = f1_binary(&p, &l);
            let m = matthews_corrcoef(&p, &l);
            prop_assert!((0.0..=1.0).contains(&a));
            prop_assert!((0.0..=1.0).contains(&f));
            prop_assert!((-1.0 - 1e-12..=1.0 + 1e-12).contains(&m));
            // MCC and F1 are symmetric in (preds, labels).
            prop_assert!((m - matthews_corrcoef(&l, &p)).abs() < 1e-12);
            prop_assert_eq!(f, f1_binary(&l, &p));
        }

        #[test]
        fn binary_mcc_matches_textbook_formula((p, l) in pair(0usize..2, 1..60)) {
            let c = |a: usize, b: usize| p.iter().zip(&l).filter(|(x, y)| **x == a && **y == b).count() as f64;
            let (tp, tn, fp, fn_) = (c(1, 1), c(0, 0), c(1, 0), c(0, 1));
            let den = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
            let want = if den == 0.0 { 0.0 } else { (tp * tn - fp * fn_) / den };
            prop_assert!((matthews_corrcoef(&p, &l) - want).abs() < 1e-12);
        }
    }
}
