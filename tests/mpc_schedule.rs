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
    10,
    "gelu+softmax prepare: 16 rounds, 57216 B, dealer 0 B\n\
gelu+softmax L=5: 152 rounds, 216684 B, client 1632 B, dealer 657384 B\n\
gelu+softmax L=9: 160 rounds, 393202 B, client 2912 B, dealer 1149872 B\n\
gelu+2quad prepare: 16 rounds, 57216 B, dealer 0 B\n\
gelu+2quad L=5: 114 rounds, 206026 B, client 1632 B, dealer 596488 B\n\
gelu+2quad L=9: 114 rounds, 355056 B, client 2912 B, dealer 966896 B\n\
gelu+2relu prepare: 16 rounds, 57216 B, dealer 0 B\n\
gelu+2relu L=5: 126 rounds, 208080 B, client 1632 B, dealer 595416 B\n\
gelu+2relu L=9: 126 rounds, 362410 B, client 2912 B, dealer 969824 B\n\
gelu_new+softmax prepare: 16 rounds, 57216 B, dealer 0 B\n\
gelu_new+softmax L=5: 152 rounds, 216684 B, client 1632 B, dealer 657384 B\n\
gelu_new+softmax L=9: 160 rounds, 393202 B, client 2912 B, dealer 1149872 B\n\
gelu_new+2quad prepare: 16 rounds, 57216 B, dealer 0 B\n\
gelu_new+2quad L=5: 114 rounds, 206026 B, client 1632 B, dealer 596488 B\n\
gelu_new+2quad L=9: 114 rounds, 355056 B, client 2912 B, dealer 966896 B\n\
gelu_new+2relu prepare: 16 rounds, 57216 B, dealer 0 B\n\
gelu_new+2relu L=5: 126 rounds, 208080 B, client 1632 B, dealer 595416 B\n\
gelu_new+2relu L=9: 126 rounds, 362410 B, client 2912 B, dealer 969824 B\n\
quad+softmax prepare: 16 rounds, 57216 B, dealer 0 B\n\
quad+softmax L=5: 132 rounds, 84764 B, client 1632 B, dealer 445384 B\n\
quad+softmax L=9: 140 rounds, 155746 B, client 2912 B, dealer 768272 B\n\
quad+2quad prepare: 16 rounds, 57216 B, dealer 0 B\n\
quad+2quad L=5: 94 rounds, 74106 B, client 1632 B, dealer 384488 B\n\
quad+2quad L=9: 94 rounds, 117600 B, client 2912 B, dealer 585296 B\n\
quad+2relu prepare: 16 rounds, 57216 B, dealer 0 B\n\
quad+2relu L=5: 106 rounds, 76160 B, client 1632 B, dealer 383416 B\n\
quad+2relu L=9: 106 rounds, 124954 B, client 2912 B, dealer 588224 B\n\
relu+softmax prepare: 16 rounds, 57216 B, dealer 0 B\n\
relu+softmax L=5: 138 rounds, 94204 B, client 1632 B, dealer 452904 B\n\
relu+softmax L=9: 146 rounds, 172738 B, client 2912 B, dealer 781808 B\n\
relu+2quad prepare: 16 rounds, 57216 B, dealer 0 B\n\
relu+2quad L=5: 100 rounds, 83546 B, client 1632 B, dealer 392008 B\n\
relu+2quad L=9: 100 rounds, 134592 B, client 2912 B, dealer 598832 B\n\
relu+2relu prepare: 16 rounds, 57216 B, dealer 0 B\n\
relu+2relu L=5: 112 rounds, 85600 B, client 1632 B, dealer 390936 B\n\
relu+2relu L=9: 112 rounds, 141946 B, client 2912 B, dealer 601760 B\n",
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
