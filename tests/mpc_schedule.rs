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
    5,
    "gelu+softmax prepare: 15 rounds, 56576 B, dealer 0 B\n\
gelu+softmax L=5: 166 rounds, 366842 B, client 1632 B, dealer 1030056 B\n\
gelu+softmax L=9: 176 rounds, 617348 B, client 2912 B, dealer 1663320 B\n\
gelu+2quad prepare: 15 rounds, 56576 B, dealer 0 B\n\
gelu+2quad L=5: 124 rounds, 353136 B, client 1632 B, dealer 962472 B\n\
gelu+2quad L=9: 124 rounds, 566270 B, client 2912 B, dealer 1456408 B\n\
gelu+2relu prepare: 15 rounds, 56576 B, dealer 0 B\n\
gelu+2relu L=5: 138 rounds, 355438 B, client 1632 B, dealer 963688 B\n\
gelu+2relu L=9: 138 rounds, 575916 B, client 2912 B, dealer 1466552 B\n\
gelu_new+softmax prepare: 15 rounds, 56576 B, dealer 0 B\n\
gelu_new+softmax L=5: 166 rounds, 366842 B, client 1632 B, dealer 1030056 B\n\
gelu_new+softmax L=9: 176 rounds, 617348 B, client 2912 B, dealer 1663320 B\n\
gelu_new+2quad prepare: 15 rounds, 56576 B, dealer 0 B\n\
gelu_new+2quad L=5: 124 rounds, 353136 B, client 1632 B, dealer 962472 B\n\
gelu_new+2quad L=9: 124 rounds, 566270 B, client 2912 B, dealer 1456408 B\n\
gelu_new+2relu prepare: 15 rounds, 56576 B, dealer 0 B\n\
gelu_new+2relu L=5: 138 rounds, 355438 B, client 1632 B, dealer 963688 B\n\
gelu_new+2relu L=9: 138 rounds, 575916 B, client 2912 B, dealer 1466552 B\n\
quad+softmax prepare: 15 rounds, 56576 B, dealer 0 B\n\
quad+softmax L=5: 144 rounds, 208042 B, client 1632 B, dealer 775816 B\n\
quad+softmax L=9: 154 rounds, 331508 B, client 2912 B, dealer 1205688 B\n\
quad+2quad prepare: 15 rounds, 56576 B, dealer 0 B\n\
quad+2quad L=5: 102 rounds, 194336 B, client 1632 B, dealer 708232 B\n\
quad+2quad L=9: 102 rounds, 280430 B, client 2912 B, dealer 998776 B\n\
quad+2relu prepare: 15 rounds, 56576 B, dealer 0 B\n\
quad+2relu L=5: 116 rounds, 196638 B, client 1632 B, dealer 709448 B\n\
quad+2relu L=9: 116 rounds, 290076 B, client 2912 B, dealer 1008920 B\n\
relu+softmax prepare: 15 rounds, 56576 B, dealer 0 B\n\
relu+softmax L=5: 152 rounds, 226442 B, client 1632 B, dealer 797416 B\n\
relu+softmax L=9: 162 rounds, 364628 B, client 2912 B, dealer 1244568 B\n\
relu+2quad prepare: 15 rounds, 56576 B, dealer 0 B\n\
relu+2quad L=5: 110 rounds, 212736 B, client 1632 B, dealer 729832 B\n\
relu+2quad L=9: 110 rounds, 313550 B, client 2912 B, dealer 1037656 B\n\
relu+2relu prepare: 15 rounds, 56576 B, dealer 0 B\n\
relu+2relu L=5: 124 rounds, 215038 B, client 1632 B, dealer 731048 B\n\
relu+2relu L=9: 124 rounds, 323196 B, client 2912 B, dealer 1047800 B\n",
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
