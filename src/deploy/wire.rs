//! The deployment's control messages (JSON in `Control` frames; protocol messages travel as
//! `Data` frames through the unchanged executor). Seeds are carried only over TLS links and
//! never printed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::bundle::hex;
use crate::mpc::prg::Seed;

/// Version of this message set.
pub const WIRE_VERSION: u32 = 1;

/// What every hello carries, so that mismatched binaries fail clearly: the message set's version
/// (high 16 bits) and the executor's schedule version (`mpc::SCHEDULE_VERSION`, low 16 bits) —
/// two parties running different schedules would otherwise desynchronise mid-inference.
pub const PROTOCOL: u32 = (WIRE_VERSION << 16) | crate::mpc::SCHEDULE_VERSION;

/// "wire W, schedule S" for an error message.
pub fn describe_protocol(p: u32) -> String {
    format!("wire {}, schedule {}", p >> 16, p & 0xffff)
}

/// A seed on the wire (hex); `Debug` hides it like [`Seed`]'s.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WireSeed(pub Seed);

impl std::fmt::Debug for WireSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl Serialize for WireSeed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex(&self.0 .0))
    }
}

impl<'de> Deserialize<'de> for WireSeed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() != 32 || !s.is_ascii() {
            return Err(serde::de::Error::custom("a seed is 32 hex digits"));
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(serde::de::Error::custom)?;
        }
        Ok(WireSeed(Seed(out)))
    }
}

/// Per-query counts one party reports to the client (public: they depend only on the
/// schedule and the sequence length).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueryStats {
    pub party: usize,
    pub seq_len: usize,
    /// Sequential flights: party↔party exchanges plus the client upload and the logits reveal.
    pub rounds: u64,
    /// Bytes this party sent to the other computing party.
    pub bytes_sent: u64,
    /// Bytes between this party and the client.
    pub client_bytes: u64,
    /// Wall time of the forward pass at this party.
    pub seconds: f64,
    /// The part of it spent obtaining preprocessing (PRG expansion, dealer round trips).
    pub offline_seconds: f64,
    /// Queries this session has served, this one included.
    pub session_queries: u64,
    /// Weight preparation of the session (once per session).
    pub prepare_seconds: f64,
}

/// Everything sent in `Control` frames.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Dealer → P0/P1: a new session `sid`, with the party's seed for weight preparation.
    Session { protocol: u32, sid: String, seed: WireSeed },
    /// P1 → P0, first message on the peer link: P1 joins session `sid`.
    PeerHello { protocol: u32, sid: String },
    /// Client → P0, then client → P1: query `qid` on the model `fingerprint`; the token type
    /// ids (and so the sequence length) are public.
    ClientHello { protocol: u32, qid: String, fingerprint: String, type_ids: Vec<u32> },
    /// P0 → client: the query is next; connect to P1.
    Start,
    /// P0 → P1: serve query `qid`.
    QueryStart { qid: String, type_ids: Vec<u32> },
    /// P1 → dealer: fresh seeds for query `qid`.
    NewQuery { qid: String },
    /// Dealer → P0/P1: this party's preprocessing seed for query `qid`.
    QuerySeed { qid: String, seed: WireSeed },
    /// Party → client, after the logits share.
    QueryDone { stats: QueryStats },
}

impl Control {
    /// The message's name, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Control::Session { .. } => "session",
            Control::PeerHello { .. } => "peer_hello",
            Control::ClientHello { .. } => "client_hello",
            Control::Start => "start",
            Control::QueryStart { .. } => "query_start",
            Control::NewQuery { .. } => "new_query",
            Control::QuerySeed { .. } => "query_seed",
            Control::QueryDone { .. } => "query_done",
        }
    }
}

/// Whether `s` looks like a [`random_id`] (what hellos must carry).
pub fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The first `n` characters of an id, for log lines.
pub fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A fresh random id (128 bits, hex) for sessions and queries.
pub fn random_id() -> String {
    hex(&Seed::random().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_roundtrip_and_hide_seeds() {
        let s = Seed([7; 16]);
        let m = Control::QuerySeed { qid: "q".into(), seed: WireSeed(s) };
        let j = serde_json::to_string(&m).unwrap();
        assert!(j.contains("\"type\":\"query_seed\""), "{j}");
        assert_eq!(serde_json::from_str::<Control>(&j).unwrap(), m);
        assert!(!format!("{m:?}").contains("07"), "{m:?}");
        assert!(serde_json::from_str::<Control>(r#"{"type":"query_seed","qid":"q","seed":"zz"}"#).is_err());
    }
}
