//! The transport seen by the protocols: a two-method channel of byte messages, an in-process
//! implementation (threads of one process), and a metering decorator. Protocol code never
//! knows about threads or sockets.

use std::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("peer disconnected")]
    Disconnected,
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Nothing arrived (or could be sent) within the link's timeout: a stalled peer.
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout { what: String, secs: f64 },
    /// A socket or TLS failure, with the link it happened on.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The peer (or this process, on another link of the same session) gave up; the text
    /// says who and why.
    #[error("{0}")]
    Aborted(String),
}

/// An ordered, reliable byte-message link to one peer.
pub trait Channel: Send {
    fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError>;
    fn recv(&mut self) -> Result<Vec<u8>, ChannelError>;
}

/// In-process link (std mpsc; unbounded, so simultaneous sends cannot deadlock).
pub struct LocalChannel {
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl LocalChannel {
    pub fn pair() -> (LocalChannel, LocalChannel) {
        let (t1, r1) = mpsc::channel();
        let (t2, r2) = mpsc::channel();
        (LocalChannel { tx: t1, rx: r2 }, LocalChannel { tx: t2, rx: r1 })
    }
}

impl Channel for LocalChannel {
    fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        self.tx.send(msg).map_err(|_| ChannelError::Disconnected)
    }
    fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        self.rx.recv().map_err(|_| ChannelError::Disconnected)
    }
}

/// Counts payload bytes and messages in each direction.
pub struct Metered<C> {
    inner: C,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
}

impl<C: Channel> Metered<C> {
    pub fn new(inner: C) -> Self {
        Self { inner, bytes_sent: 0, bytes_received: 0, messages_sent: 0 }
    }
}

impl<C: Channel> Channel for Metered<C> {
    fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        self.bytes_sent += msg.len() as u64;
        self.messages_sent += 1;
        self.inner.send(msg)
    }
    fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        let m = self.inner.recv()?;
        self.bytes_received += m.len() as u64;
        Ok(m)
    }
}

/// u64 words ↔ little-endian bytes (the wire format of ring elements).
pub fn to_bytes(v: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 8);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub fn from_bytes(b: &[u8], expected: usize) -> Result<Vec<u64>, ChannelError> {
    if b.len() != expected * 8 {
        return Err(ChannelError::Malformed(format!("expected {} ring elements, got {} bytes", expected, b.len())));
    }
    Ok(b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// Bit-packed ring elements: segment i's values are each written in `widths[i]` bits (1..=64,
/// values must fit), little-endian bit order, the last byte zero-padded. Used by openings
/// that send only the high bits of a share (`protocol::open_many_high`).
pub fn pack_bits(segments: &[(&[u64], u32)]) -> Vec<u8> {
    let bits: usize = segments.iter().map(|(v, w)| v.len() * *w as usize).sum();
    let mut out = Vec::with_capacity(bits.div_ceil(8) + 8);
    let (mut acc, mut n) = (0u128, 0u32);
    for (vals, w) in segments {
        debug_assert!((1..=64).contains(w));
        for &v in *vals {
            debug_assert!(*w == 64 || v >> w == 0, "value does not fit in {w} bits");
            acc |= (v as u128) << n;
            n += w;
            if n >= 64 {
                out.extend_from_slice(&(acc as u64).to_le_bytes());
                acc >>= 64;
                n -= 64;
            }
        }
    }
    out.extend_from_slice(&(acc as u64).to_le_bytes()[..n.div_ceil(8) as usize]);
    out
}

/// Inverse of [`pack_bits`] for segments of the given lengths and widths; the message length
/// must match exactly.
pub fn unpack_bits(b: &[u8], segments: &[(usize, u32)]) -> Result<Vec<u64>, ChannelError> {
    let bits: usize = segments.iter().map(|(n, w)| n * *w as usize).sum();
    if b.len() != bits.div_ceil(8) {
        return Err(ChannelError::Malformed(format!("expected {} bytes of packed ring elements, got {}", bits.div_ceil(8), b.len())));
    }
    let mut out = Vec::with_capacity(segments.iter().map(|(n, _)| n).sum());
    let mut words = b.chunks(8).map(|c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    });
    let (mut acc, mut n) = (0u128, 0u32);
    for &(len, w) in segments {
        let mask = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
        for _ in 0..len {
            if n < w {
                acc |= (words.next().expect("length checked above") as u128) << n;
                n += 64;
            }
            out.push(acc as u64 & mask);
            acc >>= w;
            n -= w;
        }
    }
    Ok(out)
}
