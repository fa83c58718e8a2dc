//! Embedded two-party MPC executor: private inference of the whole BertForSequenceClassification.
//!
//! Threat model: two computing parties P0 and P1 and a dealer, all semi-honest; the dealer only
//! produces correlated randomness and never sees opened values; P0 and P1 do not collude with
//! the dealer or each other. Values are additively shared over Z_2^64 with fixed-point
//! encoding (`fixed.rs`). Protocols (`protocol.rs`) see only an explicit [`party::Party`]
//! context; transport is the [`channel::Channel`] trait (see `../../shared/docs` references in
//! the README for the protocol choices: CrypTen/SPU, Escudero et al. 2020 for truncation).
//! A client (the data owner) holds the token ids and receives the logits; the model owner
//! secret-shares the weights once.
//!
//! Layers: `ring`/`fixed`/`prg`/`channel` (values, encoding, seeds, transport), `dealer` and
//! `party` (preprocessing and the per-party context with per-layer-class metering), `protocol`
//! and `compare` (products, truncation, comparisons, bit injection), `approx` and `norm` (the
//! nonlinear functions, each with its round count and accuracy domain), `bert` (one encoder
//! layer), `model` (the whole BertForSequenceClassification with client-masked embeddings),
//! `run` (in-process threads) and `eval` (sessions over many rows, the network cost model);
//! `net` is the transport across machines (typed frames over mutually authenticated TLS 1.3),
//! used by `crate::deploy` with the same protocol code.

/// Version of the executor's message schedule: which values each party opens in which round, and
/// what the dealer derives for each request. Parties (and a `kd private-eval` journal) of
/// different versions cannot be combined: the deployment's handshake and the journal's header
/// carry it. `tests/mpc_schedule.rs` pins the rounds and bytes of every variant on a tiny model;
/// a change that moves them must bump this and re-pin.
pub const SCHEDULE_VERSION: u32 = 10;

pub mod approx;
pub mod bert;
pub mod channel;
pub mod compare;
pub mod dealer;
pub mod eval;
pub mod fixed;
pub mod fused;
pub mod model;
pub mod net;
pub mod norm;
pub mod party;
pub mod prg;
pub mod protocol;
pub mod ring;
pub mod run;
