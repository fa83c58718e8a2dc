//! Private evaluation: run a model directory's BertForSequenceClassification under 2-party MPC
//! (in-process: P0, P1, the dealer and the client as threads) on tokenised rows, one inference
//! per row, with per-row and per-layer-class communication, and turn the counts into estimated
//! wall time under named network profiles.
//!
//! Cost model (mpc-protocols.md §6.4): `T ≈ T_compute + rounds·RTT/2 + bytes/bandwidth`, where a
//! round is one simultaneous exchange (both parties send at once, so one one-way latency), bytes
//! are those one party sends to the other plus its traffic with the client (the upload of the
//! masked one-hot arrives over the client's own link to each party, in parallel), and T_compute is
//! the measured in-process time. The dealer's traffic is offline (it can be sent ahead of time)
//! and reported separately. Profiles: LAN 3 Gbps / 0.8 ms RTT and WAN 200 Mbps / 40 ms RTT
//! (BOLT/BumbleBee lineage).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::bert::{share_weights, PrivateModelError};
use super::model::{client_infer, PrivateBert};
use super::party::{ClassStats, LayerClass, Party};
use super::ring::RingTensor;
use super::run::{run_with_client, DealerStats};
use crate::model::checkpoint::sorted_vars;
use crate::model::ModelDir;

/// A network for the cost model.
#[derive(Debug, Clone, Copy)]
pub struct NetworkProfile {
    pub name: &'static str,
    pub bandwidth_bits_per_s: f64,
    pub rtt_s: f64,
}

pub const LAN: NetworkProfile = NetworkProfile { name: "lan", bandwidth_bits_per_s: 3e9, rtt_s: 0.8e-3 };
pub const WAN: NetworkProfile = NetworkProfile { name: "wan", bandwidth_bits_per_s: 200e6, rtt_s: 40e-3 };
pub const PROFILES: [NetworkProfile; 2] = [LAN, WAN];

/// Estimated wall time of one workload under a profile.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkEstimate {
    pub bandwidth_mbps: f64,
    pub rtt_ms: f64,
    /// Compute + latency + transfer of the online phase.
    pub online_seconds: f64,
    /// Latency share of it (rounds · RTT/2).
    pub latency_seconds: f64,
    /// Transfer share of it (bytes / bandwidth).
    pub transfer_seconds: f64,
    /// Dealer → party transfer (offline, can be sent ahead of time) plus dealer-side compute.
    pub offline_seconds: f64,
}

/// Apply the cost model.
pub fn estimate(
    prof: &NetworkProfile,
    compute_online_s: f64,
    rounds: f64,
    bytes_per_party: f64,
    compute_offline_s: f64,
    dealer_bytes: f64,
) -> NetworkEstimate {
    let latency = rounds * prof.rtt_s / 2.0;
    let transfer = bytes_per_party * 8.0 / prof.bandwidth_bits_per_s;
    NetworkEstimate {
        bandwidth_mbps: prof.bandwidth_bits_per_s / 1e6,
        rtt_ms: prof.rtt_s * 1e3,
        online_seconds: compute_online_s + latency + transfer,
        latency_seconds: latency,
        transfer_seconds: transfer,
        offline_seconds: compute_offline_s + dealer_bytes * 8.0 / prof.bandwidth_bits_per_s,
    }
}

/// Counts of one private inference (party P0's view; P1's are identical by symmetry).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RowStats {
    pub rounds: u64,
    pub bytes_per_party: u64,
    pub client_bytes_per_party: u64,
    /// Dealer → P1 correction bytes of this inference (offline traffic).
    #[serde(default)]
    pub dealer_bytes: u64,
    /// Wall time of the inference (P0's thread), dealer work included.
    pub seconds: f64,
    /// The larger of the two parties' time spent obtaining preprocessing material.
    pub offline_seconds: f64,
    /// Per layer class.
    pub breakdown: BTreeMap<LayerClass, ClassStats>,
}

/// A whole private session.
pub struct PrivateRun {
    /// Reconstructed logits per row (by the client).
    pub logits: Vec<Vec<f64>>,
    pub rows: Vec<RowStats>,
    /// Weight preparation (W − B openings, once per model).
    pub prepare: ClassStats,
    pub prepare_seconds: f64,
    /// Dealer → P1 bytes of the weight preparation.
    pub prepare_dealer_bytes: u64,
    pub dealer: DealerStats,
    pub wall_seconds: f64,
}

/// One finished row, complete (the client's logits and both parties' counts), in the order
/// rows finish: what `kd private-eval` journals so that an interrupted run resumes.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DoneRow {
    /// Index into the `rows` given to [`run_private`].
    pub row: usize,
    pub logits: Vec<f64>,
    pub stats: RowStats,
}

/// Receives each [`DoneRow`] as soon as it is complete.
pub type RowSink = Arc<dyn Fn(DoneRow) + Send + Sync>;

/// Per-row pieces from the three threads, joined into a [`DoneRow`] when all have arrived.
#[derive(Default)]
struct Pending {
    p0: Option<RowStats>,
    /// P1's time obtaining preprocessing (whole row and per class) and its dealer bytes.
    p1: Option<(f64, BTreeMap<LayerClass, f64>, u64)>,
    logits: Option<Vec<f64>>,
}

/// Join one row's pieces: P0's counts, with the offline time of the party that waited longer
/// (whole row and per class) and P1's dealer bytes.
fn join_row(mut r: RowStats, p1: (f64, BTreeMap<LayerClass, f64>, u64)) -> RowStats {
    r.offline_seconds = r.offline_seconds.max(p1.0);
    for (k, v) in r.breakdown.iter_mut() {
        if let Some(o) = p1.1.get(k) {
            v.offline_seconds = v.offline_seconds.max(*o);
        }
    }
    r.dealer_bytes = p1.2;
    r
}

/// One row: token ids (the client's secret) and token type ids (public).
#[derive(Debug, Clone)]
pub struct PrivateRow {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

struct PartyOut {
    prepare: ClassStats,
    prepare_seconds: f64,
    prepare_dealer_bytes: u64,
}

fn snapshot(p: &mut Party) -> (BTreeMap<LayerClass, ClassStats>, f64) {
    p.flush_time();
    (p.stats.clone(), p.prep_seconds)
}

fn delta(after: &BTreeMap<LayerClass, ClassStats>, before: &BTreeMap<LayerClass, ClassStats>) -> BTreeMap<LayerClass, ClassStats> {
    after
        .iter()
        .map(|(k, v)| (*k, v.sub(&before.get(k).cloned().unwrap_or_default())))
        .filter(|(_, v)| v.rounds > 0 || v.bytes_sent > 0 || v.client_bytes > 0 || v.seconds > 0.0)
        .collect()
}

/// The parameters of a loaded model as (name, shape, values), the model owner's input.
pub fn named_parameters(md: &ModelDir) -> candle_core::Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    sorted_vars(&md.varmap)
        .into_iter()
        .map(|(n, v)| {
            let t = v.as_tensor();
            Ok((n, t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))
        })
        .collect()
}

/// Run `rows` through the model under MPC. `on_row` gets every finished row (the client's
/// logits joined with both parties' counts) as soon as all three threads are done with it.
pub fn run_private(md: &ModelDir, rows: &[PrivateRow], frac: u32, on_row: RowSink) -> Result<PrivateRun, PrivateModelError> {
    if !(8..=20).contains(&frac) {
        return Err(PrivateModelError::Setting(format!("--frac-bits {frac} is outside the supported 8..=20")));
    }
    let cfg = md.config.clone();
    let named = named_parameters(md).map_err(|e| PrivateModelError::Setting(format!("reading the model's weights: {e}")))?;
    let shares: Arc<[HashMap<String, RingTensor>; 2]> = Arc::new(share_weights(&named, &cfg, frac));
    drop(named);
    let types: Arc<Vec<Vec<u32>>> = Arc::new(rows.iter().map(|r| r.type_ids.clone()).collect());
    let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.ids.clone()).collect();
    let (vocab, labels) = (cfg.vocab_size, md.model.num_labels);
    let cfg2 = cfg.clone();
    // Rows complete in order, but their three pieces arrive from three threads.
    let pending: Arc<std::sync::Mutex<Vec<Pending>>> =
        Arc::new(std::sync::Mutex::new((0..rows.len()).map(|_| Pending::default()).collect()));
    let done: Arc<std::sync::Mutex<Vec<Option<DoneRow>>>> = Arc::new(std::sync::Mutex::new(vec![None; rows.len()]));
    let deliver = {
        let (pending, done, on_row) = (pending.clone(), done.clone(), on_row.clone());
        Arc::new(move |i: usize, f: &dyn Fn(&mut Pending)| {
            let row = {
                let mut pend = pending.lock().expect("row bookkeeping");
                f(&mut pend[i]);
                let e = &mut pend[i];
                match (e.p0.is_some(), e.p1.is_some(), e.logits.is_some()) {
                    (true, true, true) => {
                        let stats = join_row(e.p0.take().expect("checked"), e.p1.take().expect("checked"));
                        Some(DoneRow { row: i, logits: e.logits.take().expect("checked"), stats })
                    }
                    _ => None,
                }
            };
            if let Some(r) = row {
                done.lock().expect("row bookkeeping")[i] = Some(r.clone());
                on_row(r);
            }
        })
    };
    let (deliver_p, deliver_c) = (deliver.clone(), deliver);
    let t = Instant::now();
    let ((o0, _), (o1, _), dealer, client) = run_with_client(
        move |p| -> Result<PartyOut, PrivateModelError> {
            let t0 = Instant::now();
            let model = PrivateBert::prepare(p, &shares[p.id], &cfg2, frac)?;
            let prepare_seconds = t0.elapsed().as_secs_f64();
            let (mut before, mut prep_before) = snapshot(p);
            let prepare = before.values().fold(ClassStats::default(), |a, s| a.add(s));
            let prepare_dealer_bytes = p.dealer_bytes_received();
            let mut dealer_before = prepare_dealer_bytes;
            for (i, ty) in types.iter().enumerate() {
                let t1 = Instant::now();
                model.forward(p, ty, None)?;
                let seconds = t1.elapsed().as_secs_f64();
                let (after, prep_after) = snapshot(p);
                let breakdown = delta(&after, &before);
                let dealer_after = p.dealer_bytes_received();
                if p.id == 0 {
                    let tot = breakdown.values().fold(ClassStats::default(), |a, s| a.add(s));
                    let r = RowStats {
                        rounds: tot.rounds,
                        bytes_per_party: tot.bytes_sent,
                        client_bytes_per_party: tot.client_bytes,
                        dealer_bytes: 0,
                        seconds,
                        offline_seconds: prep_after - prep_before,
                        breakdown,
                    };
                    deliver_p(i, &|e: &mut Pending| e.p0 = Some(r.clone()));
                } else {
                    let per_class = breakdown.iter().map(|(k, v)| (*k, v.offline_seconds)).collect();
                    let piece = (prep_after - prep_before, per_class, dealer_after - dealer_before);
                    deliver_p(i, &|e: &mut Pending| e.p1 = Some(piece.clone()));
                }
                before = after;
                prep_before = prep_after;
                dealer_before = dealer_after;
            }
            Ok(PartyOut { prepare, prepare_seconds, prepare_dealer_bytes })
        },
        move |mut links| -> Result<(), PrivateModelError> {
            for (i, row) in ids.iter().enumerate() {
                let l = client_infer(&mut links, row, vocab, labels, frac)?;
                deliver_c(i, &|e: &mut Pending| e.logits = Some(l.clone()));
            }
            Ok(())
        },
    );
    let wall_seconds = t.elapsed().as_secs_f64();
    // Report the first error in causal order: a client-side input error makes the parties fail.
    client?;
    let (o0, o1) = (o0?, o1?);
    let done = std::mem::take(&mut *done.lock().expect("row bookkeeping"));
    let done: Vec<DoneRow> = done
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.ok_or_else(|| PrivateModelError::Setting(format!("row {i} finished without all of its pieces"))))
        .collect::<Result<_, _>>()?;
    Ok(PrivateRun {
        logits: done.iter().map(|d| d.logits.clone()).collect(),
        rows: done.into_iter().map(|d| d.stats).collect(),
        prepare: o0.prepare,
        prepare_seconds: o0.prepare_seconds.max(o1.prepare_seconds),
        prepare_dealer_bytes: o1.prepare_dealer_bytes,
        dealer,
        wall_seconds,
    })
}

/// The `"mpc"` object of `kd private-eval --output`.
#[derive(Debug, Clone, Serialize)]
pub struct MpcReport {
    pub frac_bits: u32,
    pub examples: usize,
    /// Mean per example (each row is one inference of its own length).
    pub rounds: f64,
    pub rounds_total: u64,
    /// Bytes one party sends to the other, mean per example.
    pub bytes_per_party: f64,
    pub bytes_per_party_total: u64,
    /// Client ↔ party bytes per party (masked one-hot upload, seeds, logits), mean per example.
    pub client_bytes_per_party: f64,
    /// Dealer → P1 bytes, weight preparation plus every row (as P1 received them).
    pub dealer_bytes: u64,
    /// Dealer → P1 bytes per example (the offline transfer of the network estimates).
    pub dealer_bytes_per_example: f64,
    /// Σ over rows of (wall time − time obtaining preprocessing).
    pub online_seconds: f64,
    /// Σ over rows of the time obtaining preprocessing (PRG expansion, waiting for the dealer).
    pub offline_seconds: f64,
    /// Weight preparation, once per model (not in the per-example figures).
    pub prepare_seconds: f64,
    pub prepare_bytes_per_party: u64,
    pub seconds_per_example: f64,
    /// Argmax agreement with the plaintext model on the same rows (classification), or the
    /// fraction of rows whose regression output is within 0.01 of the plaintext one.
    pub agreement: f64,
    pub max_abs_logit_diff: f64,
    pub mean_abs_logit_diff: f64,
    /// Plaintext model time on the same rows (the reference pass).
    pub plaintext_seconds: f64,
    /// Estimated wall time per example under each profile (compute as measured here).
    pub network: BTreeMap<String, NetworkEstimate>,
    /// Totals over all rows per layer class.
    pub breakdown: BTreeMap<String, ClassStats>,
}

/// Summarise a run against the plaintext logits of the same rows.
pub fn report(run: &PrivateRun, plain: &[Vec<f32>], regression: bool, frac: u32, plaintext_seconds: f64) -> MpcReport {
    let n = run.rows.len().max(1) as f64;
    let mut agree = 0usize;
    let (mut max_d, mut sum_d, mut cnt) = (0f64, 0f64, 0usize);
    for (pl, pv) in run.logits.iter().zip(plain) {
        for (a, b) in pl.iter().zip(pv) {
            let d = (a - *b as f64).abs();
            max_d = max_d.max(d);
            sum_d += d;
            cnt += 1;
        }
        let ok = if regression {
            (pl[0] - pv[0] as f64).abs() <= 0.01
        } else {
            let pf: Vec<f32> = pl.iter().map(|&v| v as f32).collect();
            crate::eval::argmax(&pf) == crate::eval::argmax(pv)
        };
        agree += ok as usize;
    }
    let mut breakdown: BTreeMap<String, ClassStats> = BTreeMap::new();
    for r in &run.rows {
        for (k, v) in &r.breakdown {
            let e = breakdown.entry(k.name().to_string()).or_default();
            *e = e.add(v);
        }
    }
    let rounds_total: u64 = run.rows.iter().map(|r| r.rounds).sum();
    let bytes_total: u64 = run.rows.iter().map(|r| r.bytes_per_party).sum();
    let client_total: u64 = run.rows.iter().map(|r| r.client_bytes_per_party).sum();
    let offline: f64 = run.rows.iter().map(|r| r.offline_seconds).sum();
    let wall: f64 = run.rows.iter().map(|r| r.seconds).sum();
    let online = (wall - offline).max(0.0);
    let dealer_rows: u64 = run.rows.iter().map(|r| r.dealer_bytes).sum();
    let network = PROFILES
        .iter()
        .map(|pr| {
            let e = estimate(
                pr,
                online / n,
                rounds_total as f64 / n,
                (bytes_total + client_total) as f64 / n,
                offline / n,
                dealer_rows as f64 / n,
            );
            (pr.name.to_string(), e)
        })
        .collect();
    MpcReport {
        frac_bits: frac,
        examples: run.rows.len(),
        rounds: rounds_total as f64 / n,
        rounds_total,
        bytes_per_party: bytes_total as f64 / n,
        bytes_per_party_total: bytes_total,
        client_bytes_per_party: client_total as f64 / n,
        dealer_bytes: run.prepare_dealer_bytes + dealer_rows,
        dealer_bytes_per_example: dealer_rows as f64 / n,
        online_seconds: online,
        offline_seconds: offline,
        prepare_seconds: run.prepare_seconds,
        prepare_bytes_per_party: run.prepare.bytes_sent,
        seconds_per_example: wall / n,
        agreement: agree as f64 / n,
        max_abs_logit_diff: max_d,
        mean_abs_logit_diff: sum_d / cnt.max(1) as f64,
        plaintext_seconds,
        network,
        breakdown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_model_adds_latency_and_transfer() {
        // 100 rounds, 30 MB per party, 1 s of compute, 12 MB from the dealer.
        let e = estimate(&WAN, 1.0, 100.0, 30e6, 0.5, 12e6);
        assert!((e.latency_seconds - 2.0).abs() < 1e-12, "100 × 20 ms");
        assert!((e.transfer_seconds - 1.2).abs() < 1e-12, "240 Mbit at 200 Mbps");
        assert!((e.online_seconds - 4.2).abs() < 1e-12);
        assert!((e.offline_seconds - (0.5 + 0.48)).abs() < 1e-12);
        let l = estimate(&LAN, 1.0, 100.0, 30e6, 0.5, 12e6);
        assert!((l.online_seconds - (1.0 + 0.04 + 0.08)).abs() < 1e-12);
    }

    #[test]
    fn report_counts_agreement_and_differences() {
        let row = |r: u64| RowStats { rounds: r, bytes_per_party: 10, client_bytes_per_party: 5, dealer_bytes: 7, seconds: 2.0, offline_seconds: 0.5, breakdown: BTreeMap::new() };
        let run = PrivateRun {
            logits: vec![vec![0.1, 0.9], vec![0.6, 0.5], vec![0.3, 0.2]],
            rows: vec![row(100), row(200), row(300)],
            prepare: ClassStats::default(),
            prepare_seconds: 0.0,
            prepare_dealer_bytes: 100,
            dealer: DealerStats::default(),
            wall_seconds: 6.0,
        };
        let plain = vec![vec![0.1f32, 0.9], vec![0.5, 0.6], vec![0.3, 0.2]];
        let r = report(&run, &plain, false, 16, 0.1);
        assert!((r.agreement - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.max_abs_logit_diff - 0.1).abs() < 1e-6);
        assert_eq!(r.rounds_total, 600);
        assert!((r.rounds - 200.0).abs() < 1e-12);
        assert!((r.online_seconds - 4.5).abs() < 1e-12 && (r.offline_seconds - 1.5).abs() < 1e-12);
        assert!(r.network["wan"].online_seconds > r.network["lan"].online_seconds);
        assert_eq!(r.dealer_bytes, 100 + 3 * 7);
        assert!((r.dealer_bytes_per_example - 7.0).abs() < 1e-12);
    }
}
