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
use super::model::{client_session, PrivateBert};
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
#[derive(Debug, Clone, Default, Serialize)]
pub struct RowStats {
    pub rounds: u64,
    pub bytes_per_party: u64,
    pub client_bytes_per_party: u64,
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
    pub dealer: DealerStats,
    pub wall_seconds: f64,
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
    rows: Vec<(RowStats, f64)>,
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

/// Run `rows` through the model under MPC. `on_row` is called after each row (progress).
pub fn run_private(
    md: &ModelDir,
    rows: &[PrivateRow],
    frac: u32,
    on_row: Arc<dyn Fn() + Send + Sync>,
) -> Result<PrivateRun, PrivateModelError> {
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
    let t = Instant::now();
    let ((o0, _), (o1, _), dealer, client) = run_with_client(
        move |p| -> Result<PartyOut, PrivateModelError> {
            let t0 = Instant::now();
            let model = PrivateBert::prepare(p, &shares[p.id], &cfg2, frac)?;
            let prepare_seconds = t0.elapsed().as_secs_f64();
            let (mut before, mut prep_before) = snapshot(p);
            let prepare = before.values().fold(ClassStats::default(), |a, s| a.add(s));
            let mut out = Vec::with_capacity(types.len());
            for ty in types.iter() {
                let t1 = Instant::now();
                model.forward(p, ty, None)?;
                let seconds = t1.elapsed().as_secs_f64();
                let (after, prep_after) = snapshot(p);
                let breakdown = delta(&after, &before);
                let tot = breakdown.values().fold(ClassStats::default(), |a, s| a.add(s));
                out.push((
                    RowStats {
                        rounds: tot.rounds,
                        bytes_per_party: tot.bytes_sent,
                        client_bytes_per_party: tot.client_bytes,
                        seconds,
                        offline_seconds: 0.0,
                        breakdown,
                    },
                    prep_after - prep_before,
                ));
                before = after;
                prep_before = prep_after;
                if p.id == 0 {
                    on_row();
                }
            }
            Ok(PartyOut { prepare, prepare_seconds, rows: out })
        },
        move |links| client_session(links, &ids, vocab, labels, frac),
    );
    let wall_seconds = t.elapsed().as_secs_f64();
    // Report the first error in causal order: a client-side input error makes the parties fail.
    let logits = client?;
    let (o0, o1) = (o0?, o1?);
    let rows = o0
        .rows
        .into_iter()
        .zip(o1.rows)
        .map(|((mut r, prep0), (r1, prep1))| {
            r.offline_seconds = prep0.max(prep1);
            // Per class, the party that waited longer for preprocessing sets the offline part.
            for (k, v) in r.breakdown.iter_mut() {
                if let Some(o) = r1.breakdown.get(k) {
                    v.offline_seconds = v.offline_seconds.max(o.offline_seconds);
                }
            }
            r
        })
        .collect();
    Ok(PrivateRun {
        logits,
        rows,
        prepare: o0.prepare,
        prepare_seconds: o0.prepare_seconds.max(o1.prepare_seconds),
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
    /// Dealer → P1 bytes, whole session (weight preparation included).
    pub dealer_bytes: u64,
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
    let network = PROFILES
        .iter()
        .map(|pr| {
            let e = estimate(
                pr,
                online / n,
                rounds_total as f64 / n,
                (bytes_total + client_total) as f64 / n,
                offline / n,
                run.dealer.bytes_sent as f64 / n,
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
        dealer_bytes: run.dealer.bytes_sent,
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
        let row = |r: u64| RowStats { rounds: r, bytes_per_party: 10, client_bytes_per_party: 5, seconds: 2.0, offline_seconds: 0.5, breakdown: BTreeMap::new() };
        let run = PrivateRun {
            logits: vec![vec![0.1, 0.9], vec![0.6, 0.5], vec![0.3, 0.2]],
            rows: vec![row(100), row(200), row(300)],
            prepare: ClassStats::default(),
            prepare_seconds: 0.0,
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
    }
}
