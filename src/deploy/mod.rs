//! Private inference across machines: the embedded executor (`mpc`) with each role in its own
//! process, linked by mutually authenticated TLS 1.3 (`mpc::net`).
//!
//! Roles and what they hold:
//! - the **model owner** runs `kd share` once: one share bundle per computing party plus a
//!   public bundle (config, tokenizer, fixed-point bits, model fingerprint) — [`bundle`];
//! - **P0** and **P1** (`kd party --role p0|p1`) each hold one additive share of every weight and
//!   compute; they never see the client's tokens, the logits, or each other's shares;
//! - the **dealer** (`kd party --role dealer`) produces correlated randomness only: per
//!   session and per query it draws fresh seeds (`Dealer::new` / `Dealer::reseed`) and answers
//!   P1's correction requests; it holds no weights and never sees an opened value;
//! - the **client** (`kd query`) tokenises locally, sends the masked one-hot X − A to both
//!   parties and reconstructs the logits from their two shares.
//!
//! Threat model: as `mpc` (semi-honest P0, P1 and dealer, no collusion), plus a network
//! attacker: every link is TLS 1.3 with certificates from the deployment's CA whose SAN names
//! the role, and each side checks the role at the other end (a client certificate cannot act
//! as P1, a party certificate from another CA is refused). Public metadata: the model
//! architecture, the sequence length and token type ids of each query, timing. A deviating
//! party can still corrupt results undetected (semi-honest protocols).
//!
//! Topology: the dealer connects to P0 and P1 and starts a **session** (fresh seeds, random
//! session id); P1 connects to P0 and joins it; both prepare the model once per session
//! (W − B opened once; the dealer keeps the masks B). Per query: the client connects to P0,
//! which serves queries **one after another from a queue** (up to `limits.max_queue` waiting,
//! more are refused as busy); P0 announces the query to P1, P1 asks the dealer for fresh seeds
//! for both parties, the client connects to P1, and the unchanged executor runs
//! (`PrivateBert::forward` / `client_infer`). Any failure inside a query ends the session:
//! every process closes its session links with the reason (peers see it at once, not after a
//! timeout), the dealer reconnects, and the next query runs on a freshly prepared session.
//! Stalls are bounded by `timeouts.io` per message; a restarted process rejoins on its own.

pub mod bundle;
pub mod certs;
pub mod client;
pub mod config;
pub mod server;
pub mod wire;

use crate::mpc::bert::PrivateModelError;
use crate::mpc::channel::ChannelError;
use crate::mpc::net::{Role, TlsSetupError};

/// Errors of the deployment (typed; `main` adds context).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Model(#[from] PrivateModelError),
    /// A peer sent a well-formed message that does not fit the protocol state.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A query that failed, with every party's reason the client could collect.
    #[error("the query failed: {0}")]
    QueryFailed(String),
    #[error("{role} refused the query: {reason}")]
    Refused { role: Role, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
