//! Embedded two-party MPC executor: private inference of the whole BertForSequenceClassification.
//!
//! Threat model: two computing parties P0 and P1 and a dealer, all semi-honest; the dealer only
//! produces correlated randomness and never sees opened values; P0 and P1 do not collude with
//! the dealer or each other. Values are additively shared over Z_2^64 with fixed-point
//! encoding (`fixed.rs`). Protocols (`protocol.rs`) see only an explicit [`party::Party`]
//! context; transport is the [`channel::Channel`] trait (see `../../shared/docs` references in
//! the README for the protocol choices: CrypTen/SPU, Escudero et al. 2020 for truncation).

pub mod approx;
pub mod bert;
pub mod channel;
pub mod compare;
pub mod dealer;
pub mod eval;
pub mod fixed;
pub mod model;
pub mod norm;
pub mod party;
pub mod prg;
pub mod protocol;
pub mod ring;
pub mod run;
