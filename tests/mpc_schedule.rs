//! The executor's message schedule, pinned: rounds, bytes to the peer, bytes with the client
//! and dealer bytes of one private inference, for every supported activation × attention
//! normalisation on a tiny random model at two lengths (the exact softmax's row-max schedule
//! depends on the length), plus the once-per-model weight preparation.
//!
//! Parties of different schedules cannot work together, and a `kd private-eval` journal must not
//! be resumed by a binary with another schedule; both are guarded by `mpc::SCHEDULE_VERSION`. A
//! change to any protocol that moves these counts must bump that constant and re-pin this table
//! (the failure prints the new one).

use std::sync::Arc;

use candle_core::Device;
use mpcformer::model::{BertConfig, HiddenAct, ModelDir, SoftmaxAct};
use mpcformer::mpc::eval::{run_private, PrivateRow};
use mpcformer::mpc::SCHEDULE_VERSION;

/// (schedule version, table) — the table as `measured()` prints it.
const PINNED: (u32, &str) = (
    2,
    "gelu+softmax prepare: 20 rounds, 57216 B, dealer 0 B\n\
gelu+softmax L=5: 194 rounds, 368132 B, client 1632 B, dealer 1014856 B\n\
gelu+softmax L=9: 204 rounds, 619670 B, client 2912 B, dealer 1635960 B\n\
gelu+2quad prepare: 20 rounds, 57216 B, dealer 0 B\n\
gelu+2quad L=5: 156 rounds, 354426 B, client 1632 B, dealer 947272 B\n\
gelu+2quad L=9: 156 rounds, 568592 B, client 2912 B, dealer 1429048 B\n\
gelu+2relu prepare: 20 rounds, 57216 B, dealer 0 B\n\
gelu+2relu L=5: 166 rounds, 356728 B, client 1632 B, dealer 948488 B\n\
gelu+2relu L=9: 166 rounds, 578238 B, client 2912 B, dealer 1439192 B\n\
gelu_new+softmax prepare: 20 rounds, 57216 B, dealer 0 B\n\
gelu_new+softmax L=5: 194 rounds, 368132 B, client 1632 B, dealer 1014856 B\n\
gelu_new+softmax L=9: 204 rounds, 619670 B, client 2912 B, dealer 1635960 B\n\
gelu_new+2quad prepare: 20 rounds, 57216 B, dealer 0 B\n\
gelu_new+2quad L=5: 156 rounds, 354426 B, client 1632 B, dealer 947272 B\n\
gelu_new+2quad L=9: 156 rounds, 568592 B, client 2912 B, dealer 1429048 B\n\
gelu_new+2relu prepare: 20 rounds, 57216 B, dealer 0 B\n\
gelu_new+2relu L=5: 166 rounds, 356728 B, client 1632 B, dealer 948488 B\n\
gelu_new+2relu L=9: 166 rounds, 578238 B, client 2912 B, dealer 1439192 B\n\
quad+softmax prepare: 20 rounds, 57216 B, dealer 0 B\n\
quad+softmax L=5: 172 rounds, 209332 B, client 1632 B, dealer 760616 B\n\
quad+softmax L=9: 182 rounds, 333830 B, client 2912 B, dealer 1178328 B\n\
quad+2quad prepare: 20 rounds, 57216 B, dealer 0 B\n\
quad+2quad L=5: 134 rounds, 195626 B, client 1632 B, dealer 693032 B\n\
quad+2quad L=9: 134 rounds, 282752 B, client 2912 B, dealer 971416 B\n\
quad+2relu prepare: 20 rounds, 57216 B, dealer 0 B\n\
quad+2relu L=5: 144 rounds, 197928 B, client 1632 B, dealer 694248 B\n\
quad+2relu L=9: 144 rounds, 292398 B, client 2912 B, dealer 981560 B\n\
relu+softmax prepare: 20 rounds, 57216 B, dealer 0 B\n\
relu+softmax L=5: 180 rounds, 227732 B, client 1632 B, dealer 782216 B\n\
relu+softmax L=9: 190 rounds, 366950 B, client 2912 B, dealer 1217208 B\n\
relu+2quad prepare: 20 rounds, 57216 B, dealer 0 B\n\
relu+2quad L=5: 142 rounds, 214026 B, client 1632 B, dealer 714632 B\n\
relu+2quad L=9: 142 rounds, 315872 B, client 2912 B, dealer 1010296 B\n\
relu+2relu prepare: 20 rounds, 57216 B, dealer 0 B\n\
relu+2relu L=5: 152 rounds, 216328 B, client 1632 B, dealer 715848 B\n\
relu+2relu L=9: 152 rounds, 325518 B, client 2912 B, dealer 1020440 B\n",
);

fn measured() -> String {
    let dev = Device::Cpu;
    let mut out = String::new();
    for act in [HiddenAct::Gelu, HiddenAct::GeluNew, HiddenAct::Quad, HiddenAct::Relu] {
        for sm in [SoftmaxAct::Softmax, SoftmaxAct::TwoQuad, SoftmaxAct::TwoRelu] {
            let mut cfg = BertConfig::tiny(2, 16, 2, 40);
            cfg.set_labels(&["a".into(), "b".into()], false);
            cfg.hidden_act = act;
            cfg.softmax_act = sm;
            let md = ModelDir::random(cfg, 2, 7, &dev).unwrap();
            let rows: Vec<PrivateRow> = [5usize, 9]
                .iter()
                .map(|&n| PrivateRow { ids: (0..n as u32).map(|i| 1 + i * 3 % 39).collect(), type_ids: vec![0; n] })
                .collect();
            let run = run_private(&md, &rows, 16, Arc::new(|_| {})).unwrap();
            out += &format!(
                "{}+{} prepare: {} rounds, {} B, dealer {} B\n",
                act.name(),
                sm.name(),
                run.prepare.rounds,
                run.prepare.bytes_sent,
                run.prepare_dealer_bytes
            );
            for (r, s) in rows.iter().zip(&run.rows) {
                out += &format!(
                    "{}+{} L={}: {} rounds, {} B, client {} B, dealer {} B\n",
                    act.name(),
                    sm.name(),
                    r.ids.len(),
                    s.rounds,
                    s.bytes_per_party,
                    s.client_bytes_per_party,
                    s.dealer_bytes
                );
            }
        }
    }
    out
}

#[test]
fn message_schedule_matches_its_version() {
    let got = measured();
    assert_eq!(
        (SCHEDULE_VERSION, got.as_str()),
        PINNED,
        "the executor's message schedule is not the one pinned for mpc::SCHEDULE_VERSION = {}: if the change \
         is intended, bump SCHEDULE_VERSION and pin this table:\n{got}",
        PINNED.0
    );
}
