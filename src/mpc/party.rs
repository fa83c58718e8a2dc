//! The party context passed explicitly to every protocol (no globals): id, the link to the
//! other computing party, the dealer link, and communication statistics per layer class.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::channel::{from_bytes, to_bytes, Channel, ChannelError};
use super::dealer::{DealerLink, Material, Request};
use super::ring::RingTensor;

/// Where communication is spent (the paper's Figure-2 breakdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerClass {
    Embedding,
    Linear,
    Attention,
    Softmax,
    Activation,
    LayerNorm,
    /// tanh(dense(h[0])).
    Pooler,
    /// The classifier and the reveal of the logits to the client.
    Classifier,
    Other,
}

impl LayerClass {
    pub fn name(self) -> &'static str {
        match self {
            LayerClass::Embedding => "embedding",
            LayerClass::Linear => "linear",
            LayerClass::Attention => "attention",
            LayerClass::Softmax => "softmax",
            LayerClass::Activation => "activation",
            LayerClass::LayerNorm => "layernorm",
            LayerClass::Pooler => "pooler",
            LayerClass::Classifier => "classifier",
            LayerClass::Other => "other",
        }
    }
}

/// Rounds and bytes of one party, per layer class.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ClassStats {
    /// Sequential message flights (party↔party exchanges, plus the client's upload and the
    /// reveal of the logits to the client).
    pub rounds: u64,
    /// Bytes this party sent to the other computing party.
    pub bytes_sent: u64,
    /// Bytes between this party and the client (the masked one-hot upload, seeds, logits).
    pub client_bytes: u64,
    /// This party's wall time while the class was active (compute, waiting, dealer requests).
    pub seconds: f64,
    /// The part of `seconds` spent obtaining preprocessing material (PRG, dealer).
    pub offline_seconds: f64,
}

impl ClassStats {
    pub fn add(&self, o: &ClassStats) -> ClassStats {
        ClassStats {
            rounds: self.rounds + o.rounds,
            bytes_sent: self.bytes_sent + o.bytes_sent,
            client_bytes: self.client_bytes + o.client_bytes,
            seconds: self.seconds + o.seconds,
            offline_seconds: self.offline_seconds + o.offline_seconds,
        }
    }
    pub fn sub(&self, o: &ClassStats) -> ClassStats {
        ClassStats {
            rounds: self.rounds - o.rounds,
            bytes_sent: self.bytes_sent - o.bytes_sent,
            client_bytes: self.client_bytes - o.client_bytes,
            seconds: self.seconds - o.seconds,
            offline_seconds: self.offline_seconds - o.offline_seconds,
        }
    }
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

/// An independent computation whose messages ride in the rounds of whatever protocol runs next
/// ([`Party::attach_rider`]): each of its messages is appended to the next round's own message
/// and split off the peer's reply, so it adds bytes (booked to its own class) but no rounds.
/// Both parties attach the same rider at the same point of the schedule, and its messages, like
/// every round's, have the same length on both sides.
pub trait Rider: std::any::Any + Send {
    /// The next message, or None when the rider has nothing more to send.
    fn next_message(&mut self) -> Option<Vec<u8>>;
    /// The peer's counterpart of the message last sent.
    fn receive(&mut self, theirs: Vec<u8>) -> Result<(), ChannelError>;
    /// The class its traffic is booked to.
    fn class(&self) -> LayerClass;
}

/// [`Party::public_term`] for party `id`, for local steps that hold no party.
pub(crate) fn public_term_of(id: usize, v: u64) -> u64 {
    if id == 0 {
        v
    } else {
        0
    }
}

pub struct Party {
    pub id: usize,
    rider: Option<Box<dyn Rider>>,
    peer: Box<dyn Channel>,
    dealer: DealerLink,
    client: Option<Box<dyn Channel>>,
    class: LayerClass,
    class_since: Instant,
    pub stats: BTreeMap<LayerClass, ClassStats>,
    /// Seconds spent obtaining preprocessing material (PRG expansion, waiting for the dealer).
    pub prep_seconds: f64,
}

impl Party {
    pub fn new(id: usize, peer: Box<dyn Channel>, dealer: DealerLink) -> Self {
        assert!(id < 2, "two computing parties");
        Self {
            id,
            rider: None,
            peer,
            dealer,
            client: None,
            class: LayerClass::Other,
            class_since: Instant::now(),
            stats: BTreeMap::new(),
            prep_seconds: 0.0,
        }
    }

    /// Attach the link to the client (the data owner).
    pub fn with_client(mut self, client: Box<dyn Channel>) -> Self {
        self.client = Some(client);
        self
    }

    /// Attach (or replace) the client link of the next inference.
    pub fn set_client(&mut self, client: Box<dyn Channel>) {
        self.client = Some(client);
    }

    /// Start the next inference from a fresh preprocessing seed (see [`DealerLink::reseed`]).
    pub fn reseed(&mut self, seed: super::prg::Seed) -> Result<(), ChannelError> {
        self.dealer.reseed(seed)
    }

    /// Attribute the following communication and time to `class`.
    pub fn set_class(&mut self, class: LayerClass) {
        self.flush_time();
        self.class = class;
    }

    /// Book the time since the last class switch to the current class.
    pub fn flush_time(&mut self) {
        let now = Instant::now();
        self.stats.entry(self.class).or_default().seconds += (now - self.class_since).as_secs_f64();
        self.class_since = now;
    }

    /// Send to the client; `flight` counts the message as a round (on the critical path).
    pub fn client_send(&mut self, msg: &[u64], flight: bool) -> Result<(), ChannelError> {
        let bytes = to_bytes(msg);
        let s = self.stats.entry(self.class).or_default();
        s.client_bytes += bytes.len() as u64;
        s.rounds += flight as u64;
        self.client.as_mut().ok_or(ChannelError::Disconnected)?.send(bytes)
    }

    /// Receive `n` ring elements from the client (one flight).
    pub fn client_recv(&mut self, n: usize) -> Result<Vec<u64>, ChannelError> {
        let msg = self.client.as_mut().ok_or(ChannelError::Disconnected)?.recv()?;
        let s = self.stats.entry(self.class).or_default();
        s.client_bytes += msg.len() as u64;
        s.rounds += 1;
        from_bytes(&msg, n)
    }

    /// One round: send `mine` to the peer and receive the peer's message of equal length.
    pub fn exchange(&mut self, mine: &[u64]) -> Result<Vec<u64>, ChannelError> {
        let theirs = self.exchange_bytes(to_bytes(mine))?;
        from_bytes(&theirs, mine.len())
    }

    /// One round like [`Party::exchange`], with segment i's words sent in `widths` bits each
    /// (`channel::pack_bits`); both parties send the same layout.
    pub fn exchange_packed(&mut self, segments: &[(&[u64], u32)]) -> Result<Vec<u64>, ChannelError> {
        let theirs = self.exchange_bytes(super::channel::pack_bits(segments))?;
        let layout: Vec<(usize, u32)> = segments.iter().map(|(v, w)| (v.len(), *w)).collect();
        super::channel::unpack_bits(&theirs, &layout)
    }

    /// Send one message to the peer and receive its message of the same round, metered; an
    /// attached rider's next message travels in the same round.
    fn exchange_bytes(&mut self, mut bytes: Vec<u8>) -> Result<Vec<u8>, ChannelError> {
        let s = self.stats.entry(self.class).or_default();
        s.rounds += 1;
        s.bytes_sent += bytes.len() as u64;
        let own = bytes.len();
        let ride = match self.rider.as_mut() {
            Some(r) => r.next_message().map(|m| (r.class(), m)),
            None => None,
        };
        if let Some((class, m)) = &ride {
            self.stats.entry(*class).or_default().bytes_sent += m.len() as u64;
            bytes.extend_from_slice(m);
        }
        self.peer.send(bytes)?;
        let mut theirs = self.peer.recv()?;
        if let Some((_, m)) = ride {
            if theirs.len() != own + m.len() {
                return Err(ChannelError::Malformed(format!("expected {} + {} bytes with a rider, got {}", own, m.len(), theirs.len())));
            }
            let tail = theirs.split_off(own);
            self.rider.as_mut().expect("attached").receive(tail)?;
        }
        Ok(theirs)
    }

    /// Let `rider`'s messages travel in the following rounds.
    pub fn attach_rider(&mut self, rider: Box<dyn Rider>) {
        assert!(self.rider.is_none(), "one rider at a time");
        self.rider = Some(rider);
    }

    /// Take the rider back, first giving it rounds of its own (booked to its class) for any
    /// message it has not sent yet.
    pub fn detach_rider<R: Rider>(&mut self) -> Result<R, ChannelError> {
        let mut r = self.rider.take().expect("a rider is attached");
        while let Some(m) = r.next_message() {
            let n = m.len();
            // A round of its own, booked to its class (the class's time is not switched).
            let host = std::mem::replace(&mut self.class, r.class());
            let theirs = self.exchange_bytes(m);
            self.class = host;
            let theirs = theirs?;
            if theirs.len() != n {
                return Err(ChannelError::Malformed(format!("expected {n} bytes from the peer's rider, got {}", theirs.len())));
            }
            r.receive(theirs)?;
        }
        let any: Box<dyn std::any::Any> = r;
        Ok(*any.downcast::<R>().expect("the rider's own type"))
    }

    /// End the session with the dealer (it stops serving once P1's link is gone).
    /// Close the link to the other party (messages already sent can still be read there), so a
    /// party that stopped early never leaves its peer waiting.
    pub fn hang_up_peer(&mut self) {
        let (closed, _other_end) = super::channel::LocalChannel::pair();
        self.peer = Box::new(closed);
    }

    /// Detach the client link (closing it ends the client's session).
    pub fn take_client(&mut self) -> Option<Box<dyn Channel>> {
        self.client.take()
    }

    pub fn hang_up_dealer(&mut self) {
        self.dealer = DealerLink::Closed;
    }

    pub fn preprocessing(&mut self, req: Request) -> Result<Material, ChannelError> {
        let t = Instant::now();
        let m = self.dealer.fetch(req);
        let dt = t.elapsed().as_secs_f64();
        self.prep_seconds += dt;
        self.stats.entry(self.class).or_default().offline_seconds += dt;
        m
    }

    /// Correction bytes this party has received from the dealer (P1; P0 receives none).
    pub fn dealer_bytes_received(&self) -> u64 {
        self.dealer.received_bytes()
    }

    /// Book local input-independent work (e.g. [a]·(W − B)) as preprocessing time.
    pub fn add_offline_seconds(&mut self, dt: f64) {
        self.prep_seconds += dt;
        self.stats.entry(self.class).or_default().offline_seconds += dt;
    }

    /// Total rounds and bytes over all classes.
    pub fn totals(&self) -> ClassStats {
        self.stats.values().fold(ClassStats::default(), |a, s| a.add(s))
    }

    /// A public constant enters the sum once: P0 adds it.
    pub fn public_term(&self, v: u64) -> u64 {
        public_term_of(self.id, v)
    }
}
