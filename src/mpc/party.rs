//! The party context passed explicitly to every protocol (no globals): id, the link to the
//! other computing party, the dealer link, and communication statistics per layer class.

use std::collections::BTreeMap;

use serde::Serialize;

use super::channel::{from_bytes, to_bytes, Channel, ChannelError};
use super::dealer::{DealerLink, Material, Request};
use super::ring::RingTensor;

/// Where communication is spent (the paper's Figure-2 breakdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerClass {
    Embedding,
    Linear,
    Attention,
    Softmax,
    Activation,
    LayerNorm,
    Other,
}

/// Rounds and bytes sent by one party.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassStats {
    pub rounds: u64,
    pub bytes_sent: u64,
}

/// A party's secret share of a fixed-point tensor. Never printed.
#[derive(Clone)]
pub struct Share {
    pub ring: RingTensor,
    /// Fractional bits of the encoding.
    pub frac: u32,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share{{shape: {:?}, frac: {}, ..}}", self.ring.shape, self.frac)
    }
}

pub struct Party {
    pub id: usize,
    peer: Box<dyn Channel>,
    dealer: DealerLink,
    class: LayerClass,
    pub stats: BTreeMap<LayerClass, ClassStats>,
}

impl Party {
    pub fn new(id: usize, peer: Box<dyn Channel>, dealer: DealerLink) -> Self {
        assert!(id < 2, "two computing parties");
        Self { id, peer, dealer, class: LayerClass::Other, stats: BTreeMap::new() }
    }

    /// Attribute the following communication to `class`.
    pub fn set_class(&mut self, class: LayerClass) {
        self.class = class;
    }

    /// One round: send `mine` to the peer and receive the peer's message of equal length.
    pub fn exchange(&mut self, mine: &[u64]) -> Result<Vec<u64>, ChannelError> {
        let bytes = to_bytes(mine);
        let s = self.stats.entry(self.class).or_default();
        s.rounds += 1;
        s.bytes_sent += bytes.len() as u64;
        self.peer.send(bytes)?;
        from_bytes(&self.peer.recv()?, mine.len())
    }

    /// End the session with the dealer (it stops serving once P1's link is gone).
    pub fn hang_up_dealer(&mut self) {
        self.dealer = DealerLink::Closed;
    }

    pub fn preprocessing(&mut self, req: Request) -> Result<Material, ChannelError> {
        self.dealer.fetch(req)
    }

    /// Total rounds and bytes over all classes.
    pub fn totals(&self) -> ClassStats {
        self.stats.values().fold(ClassStats::default(), |a, s| ClassStats {
            rounds: a.rounds + s.rounds,
            bytes_sent: a.bytes_sent + s.bytes_sent,
        })
    }

    /// A public constant enters the sum once: P0 adds it.
    pub fn public_term(&self, v: u64) -> u64 {
        if self.id == 0 {
            v
        } else {
            0
        }
    }
}
