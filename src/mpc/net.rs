//! Party links across machines: length-prefixed typed frames over TLS 1.3 with mutual
//! certificate authentication (rustls, ring provider), behind the same [`Channel`] trait the
//! in-process executor uses. Protocol code does not change; only the channel does.
//!
//! **Framing.** A frame is `kind: u8 ‖ len: u32 LE ‖ payload` with `len ≤ MAX_FRAME_PAYLOAD`.
//! A protocol message (`Channel::send`) travels as zero or more `DataPart` frames followed by one
//! `Data` frame, reassembled up to a per-link `max_message`; `Control` frames carry the
//! deployment's typed control messages (JSON) and `Abort` a UTF-8 reason. Unknown kinds,
//! oversized lengths and truncated frames are [`ChannelError::Malformed`].
//!
//! **TLS.** Every process has one certificate whose DNS SAN is its role (`p0`, `p1`, `dealer`,
//! `client`), signed by the deployment's CA (`kd certs`). The connecting side checks the name
//! it expects (rustls' server-name check); the accepting side requires a client certificate
//! from the CA and reads the role from it, so each side knows which role is on a link. Only TLS
//! 1.3 is offered; session tickets are off (no resumption state to protect).
//!
//! **Threading.** Each link has one reader thread that always drains the socket into a queue,
//! so the simultaneous sends of a 2PC exchange (both parties send, then both receive) cannot
//! deadlock on full TCP buffers. Writers encrypt under the connection lock and write the
//! records under a separate socket lock, so a blocked write never stalls the reader.
//!
//! **Failures.** Receives take a timeout: no bytes from the peer for that long (a stalled peer)
//! is [`ChannelError::Timeout`], while a large message still arriving counts as progress.
//! Sockets have a write timeout (a peer that stops reading), and a closed or failed link turns
//! into an error on the next receive, never a hang. [`Link::on_close`] hooks let a session
//! poison its other links when one of them fails, so every blocked party wakes up with the
//! reason.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::channel::{Channel, ChannelError};

/// Bytes of a frame header: kind (1) and payload length (4, little-endian).
pub const FRAME_HEADER: usize = 5;
/// Largest payload of one frame; longer messages are split into `DataPart` frames.
pub const MAX_FRAME_PAYLOAD: usize = 16 << 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// The last (or only) fragment of a protocol message.
    Data = 1,
    /// A fragment of a protocol message with more to follow.
    DataPart = 2,
    /// A deployment control message (JSON).
    Control = 3,
    /// The sender gives up; payload is the reason (UTF-8).
    Abort = 4,
}

impl FrameKind {
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Data,
            2 => FrameKind::DataPart,
            3 => FrameKind::Control,
            4 => FrameKind::Abort,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

/// Append one frame to `out`. Panics if `payload` exceeds [`MAX_FRAME_PAYLOAD`] (a caller bug:
/// messages are split by [`encode_message`]).
pub fn encode_frame(kind: FrameKind, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= MAX_FRAME_PAYLOAD, "frame payload of {} bytes", payload.len());
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The frames of one protocol message: `DataPart`* then `Data`.
pub fn message_frames(msg: &[u8]) -> impl Iterator<Item = (FrameKind, &[u8])> {
    let n = msg.len().div_ceil(MAX_FRAME_PAYLOAD).max(1);
    (0..n).map(move |i| {
        let chunk = &msg[(i * MAX_FRAME_PAYLOAD).min(msg.len())..((i + 1) * MAX_FRAME_PAYLOAD).min(msg.len())];
        (if i + 1 == n { FrameKind::Data } else { FrameKind::DataPart }, chunk)
    })
}

/// Encode a whole protocol message as frames (tests; links stream the frames instead).
pub fn encode_message(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + FRAME_HEADER);
    for (k, c) in message_frames(msg) {
        encode_frame(k, c, &mut out);
    }
    out
}

/// Incremental frame parser over a byte stream.
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max_payload: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_PAYLOAD)
    }
}

impl FrameDecoder {
    pub fn new(max_payload: usize) -> Self {
        Self { buf: Vec::new(), start: 0, max_payload }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` if more bytes are needed. A bad kind or an oversized
    /// length is an error at once (before the payload arrives).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ChannelError> {
        let avail = &self.buf[self.start..];
        if avail.is_empty() {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(avail[0])
            .ok_or_else(|| ChannelError::Malformed(format!("unknown frame kind 0x{:02x}", avail[0])))?;
        if avail.len() < FRAME_HEADER {
            return Ok(None);
        }
        let len = u32::from_le_bytes(avail[1..5].try_into().expect("4 bytes")) as usize;
        if len > self.max_payload {
            return Err(ChannelError::Malformed(format!(
                "frame of {len} bytes exceeds the maximum of {} bytes",
                self.max_payload
            )));
        }
        if avail.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        let payload = avail[FRAME_HEADER..FRAME_HEADER + len].to_vec();
        self.start += FRAME_HEADER + len;
        if self.start > (1 << 20) && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(Frame { kind, payload }))
    }

    /// Bytes of an incomplete frame still buffered (non-zero at end of stream = truncated).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// What a link's reader delivers.
#[derive(Debug)]
pub enum Incoming {
    Message(Vec<u8>),
    Control(Vec<u8>),
    Abort(String),
    /// The link is gone (the first reason only; later receives report it again).
    Closed(ChannelError),
}

/// Turns frames into messages: fragments are joined, up to `max_message` bytes.
pub struct Reassembler {
    parts: Vec<u8>,
    max_message: usize,
}

impl Reassembler {
    pub fn new(max_message: usize) -> Self {
        Self { parts: Vec::new(), max_message }
    }

    pub fn push(&mut self, f: Frame) -> Result<Option<Incoming>, ChannelError> {
        match f.kind {
            FrameKind::DataPart | FrameKind::Data => {
                if self.parts.len() + f.payload.len() > self.max_message {
                    return Err(ChannelError::Malformed(format!(
                        "message exceeds the maximum of {} bytes",
                        self.max_message
                    )));
                }
                if f.kind == FrameKind::DataPart {
                    self.parts.extend_from_slice(&f.payload);
                    return Ok(None);
                }
                if self.parts.is_empty() {
                    return Ok(Some(Incoming::Message(f.payload)));
                }
                let mut m = std::mem::take(&mut self.parts);
                m.extend_from_slice(&f.payload);
                Ok(Some(Incoming::Message(m)))
            }
            _ if !self.parts.is_empty() => {
                Err(ChannelError::Malformed(format!("{:?} frame inside a fragmented message", f.kind)))
            }
            FrameKind::Control => Ok(Some(Incoming::Control(f.payload))),
            FrameKind::Abort => Ok(Some(Incoming::Abort(String::from_utf8_lossy(&f.payload).into_owned()))),
        }
    }
}

/// The roles of a deployment; each certificate names exactly one (its DNS SAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    P0,
    P1,
    Dealer,
    Client,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::P0, Role::P1, Role::Dealer, Role::Client];

    pub fn name(self) -> &'static str {
        match self {
            Role::P0 => "p0",
            Role::P1 => "p1",
            Role::Dealer => "dealer",
            Role::Client => "client",
        }
    }

    /// The computing party id (0 or 1), if this is a computing party.
    pub fn party_id(self) -> Option<usize> {
        match self {
            Role::P0 => Some(0),
            Role::P1 => Some(1),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| format!("unknown role '{s}' (p0, p1, dealer, client)"))
    }
}

/// Errors setting up TLS (files, certificates, configuration).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{path}: {msg}")]
    File { path: std::path::PathBuf, msg: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The role a certificate names, if exactly one.
pub fn role_of(cert: &CertificateDer<'_>) -> Result<Role, String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    let named: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|r| {
            let name = ServerName::try_from(r.name()).expect("role names are DNS names");
            ee.verify_is_valid_for_subject_name(&name).is_ok()
        })
        .collect();
    match named.as_slice() {
        [r] => Ok(*r),
        [] => Err("the certificate names no role (p0, p1, dealer, client)".into()),
        _ => Err(format!("the certificate names several roles: {named:?}")),
    }
}

/// This process's TLS identity: its role, certificate chain and key, and the deployment CA.
pub struct Identity {
    pub role: Role,
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// Load PEM files and check that the certificate names `role`.
    pub fn load(role: Role, cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsSetupError> {
        use rustls::pki_types::pem::PemObject;
        let file_err = |p: &Path| {
            let p = p.to_path_buf();
            move |e: rustls::pki_types::pem::Error| TlsSetupError::File { path: p, msg: e.to_string() }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(file_err(cert))?
            .collect::<Result<_, _>>()
            .map_err(file_err(cert))?;
        let leaf = chain
            .first()
            .ok_or_else(|| TlsSetupError::File { path: cert.to_path_buf(), msg: "no certificate in the file".into() })?;
        let named = role_of(leaf).map_err(|msg| TlsSetupError::File { path: cert.to_path_buf(), msg })?;
        if named != role {
            return Err(TlsSetupError::File {
                path: cert.to_path_buf(),
                msg: format!("the certificate is for role {named}, but this process runs as {role}"),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(file_err(key))?;
        let mut roots = rustls::RootCertStore::empty();
        let cas: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(ca).map_err(file_err(ca))?.collect::<Result<_, _>>().map_err(file_err(ca))?;
        if cas.is_empty() {
            return Err(TlsSetupError::File { path: ca.to_path_buf(), msg: "no CA certificate in the file".into() });
        }
        for c in cas {
            roots.add(c).map_err(|e| TlsSetupError::File { path: ca.to_path_buf(), msg: e.to_string() })?;
        }
        let roots = Arc::new(roots);
        let cfg_err = |e: rustls::Error| TlsSetupError::Config(e.to_string());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsSetupError::Config(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(cfg_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(cfg_err)?;
        server.send_tls13_tickets = 0;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(cfg_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(cfg_err)?;
        Ok(Self { role, client: Arc::new(client), server: Arc::new(server) })
    }
}

/// Timeouts and size limits of a link.
#[derive(Debug, Clone, Copy)]
pub struct LinkLimits {
    /// TCP connect and TLS handshake.
    pub handshake: Duration,
    /// Default wait for a message during a protocol, and the socket write timeout.
    pub io: Duration,
    /// Largest reassembled message.
    pub max_message: usize,
}

impl Default for LinkLimits {
    fn default() -> Self {
        Self { handshake: Duration::from_secs(10), io: Duration::from_secs(60), max_message: 1 << 30 }
    }
}

type Hook = Box<dyn FnOnce(String) + Send>;

struct Hooks {
    closed: Option<String>,
    pending: Vec<Hook>,
}

struct LinkInner {
    peer: Role,
    label: String,
    conn: Arc<Mutex<rustls::Connection>>,
    /// Serialises socket writes (TLS records must reach the socket in encryption order).
    wsock: Mutex<TcpStream>,
    rx: Mutex<mpsc::Receiver<Incoming>>,
    tx: mpsc::Sender<Incoming>,
    sock: TcpStream,
    /// The first terminal error, reported again by later receives.
    dead: Mutex<Option<String>>,
    hooks: Arc<Mutex<Hooks>>,
    limits: LinkLimits,
    /// When the reader last got bytes (nanoseconds since `epoch`).
    progress: Arc<AtomicU64>,
    epoch: Instant,
}

impl Drop for LinkInner {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// An authenticated TLS link to one peer (cheap to clone; the socket closes with the last clone).
#[derive(Clone)]
pub struct Link {
    inner: Arc<LinkInner>,
}

fn io_ctx(context: &str) -> impl FnOnce(io::Error) -> ChannelError + '_ {
    move |source| ChannelError::Io { context: context.to_string(), source }
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Drive the handshake on a blocking socket (its timeouts bound the wait).
fn handshake(conn: &mut rustls::Connection, sock: &mut TcpStream, label: &str, limit: Duration) -> Result<(), ChannelError> {
    while conn.is_handshaking() {
        conn.complete_io(sock).map_err(|e| {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                ChannelError::Timeout { what: format!("the TLS handshake with {label}"), secs: limit.as_secs_f64() }
            } else {
                ChannelError::Io { context: format!("TLS handshake with {label}"), source: e }
            }
        })?;
    }
    while conn.wants_write() {
        conn.write_tls(sock).map_err(io_ctx(&format!("TLS handshake with {label}")))?;
    }
    Ok(())
}

impl Link {
    /// Connect to `addr`, which must present a certificate for role `expect`.
    pub fn connect(addr: &str, expect: Role, id: &Identity, limits: LinkLimits) -> Result<Link, ChannelError> {
        let label = format!("{expect} at {addr}");
        let sa = addr
            .to_socket_addrs()
            .map_err(io_ctx(&format!("resolving {label}")))?
            .next()
            .ok_or_else(|| ChannelError::Malformed(format!("{addr}: no address")))?;
        let mut sock = TcpStream::connect_timeout(&sa, limits.handshake).map_err(io_ctx(&format!("connecting to {label}")))?;
        let name = ServerName::try_from(expect.name()).expect("role names are DNS names");
        let conn = rustls::ClientConnection::new(id.client.clone(), name)
            .map_err(|e| ChannelError::Io { context: format!("TLS to {label}"), source: tls_err(e) })?;
        let mut conn = rustls::Connection::Client(conn);
        prepare_socket(&sock, limits, &label)?;
        handshake(&mut conn, &mut sock, &label, limits.handshake)?;
        // rustls checked the server name; an explicit check guards against a config mistake.
        let peer = conn.peer_certificates().and_then(|c| c.first()).map(role_of);
        if peer != Some(Ok(expect)) {
            return Err(ChannelError::Aborted(format!("{label}: the peer's certificate is not for role {expect}")));
        }
        Link::start(conn, sock, expect, label, limits)
    }

    /// Complete the server side of a handshake on an accepted socket; the peer's role comes from
    /// its (CA-verified) certificate.
    pub fn accept(mut sock: TcpStream, id: &Identity, limits: LinkLimits) -> Result<Link, ChannelError> {
        let addr = sock.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        let label = format!("peer at {addr}");
        let conn = rustls::ServerConnection::new(id.server.clone())
            .map_err(|e| ChannelError::Io { context: format!("TLS with {label}"), source: tls_err(e) })?;
        let mut conn = rustls::Connection::Server(conn);
        prepare_socket(&sock, limits, &label)?;
        handshake(&mut conn, &mut sock, &label, limits.handshake)?;
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| ChannelError::Aborted(format!("{label} sent no client certificate")))?;
        let peer = role_of(cert).map_err(|m| ChannelError::Aborted(format!("{label}: {m}")))?;
        Link::start(conn, sock, peer, format!("{peer} at {addr}"), limits)
    }

    fn start(conn: rustls::Connection, sock: TcpStream, peer: Role, label: String, limits: LinkLimits) -> Result<Link, ChannelError> {
        // Reads block until data or shutdown (idle links are normal); receive timeouts are
        // applied on the queue. Writes keep the timeout: a peer that stops reading is stalled.
        sock.set_read_timeout(None).map_err(io_ctx(&label))?;
        let reader_sock = sock.try_clone().map_err(io_ctx(&label))?;
        let wsock = sock.try_clone().map_err(io_ctx(&label))?;
        let (tx, rx) = mpsc::channel();
        let mut conn = conn;
        // Whole pieces are encrypted and drained at once; rustls' default 64 KiB cap on unsent
        // records would make larger plaintext writes fail.
        conn.set_buffer_limit(None);
        let conn = Arc::new(Mutex::new(conn));
        let hooks = Arc::new(Mutex::new(Hooks { closed: None, pending: Vec::new() }));
        let (progress, epoch) = (Arc::new(AtomicU64::new(0)), Instant::now());
        {
            let (conn, tx, hooks, label) = (conn.clone(), tx.clone(), hooks.clone(), label.clone());
            let progress = Progress { at: progress.clone(), epoch };
            std::thread::Builder::new()
                .name(format!("link-{peer}"))
                .spawn(move || reader_loop(reader_sock, conn, tx, hooks, label, limits, progress))
                .map_err(io_ctx("spawning a link reader"))?;
        }
        Ok(Link {
            inner: Arc::new(LinkInner {
                peer,
                label,
                conn,
                wsock: Mutex::new(wsock),
                rx: Mutex::new(rx),
                tx,
                sock,
                dead: Mutex::new(None),
                hooks,
                limits,
                progress,
                epoch,
            }),
        })
    }

    /// The authenticated role of the peer.
    pub fn peer(&self) -> Role {
        self.inner.peer
    }

    /// "p1 at 10.0.0.2:7000", for messages.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    pub fn limits(&self) -> LinkLimits {
        self.inner.limits
    }

    /// Whether the reader has seen the end of the link.
    pub fn is_closed(&self) -> bool {
        self.inner.hooks.lock().map(|h| h.closed.is_some()).unwrap_or(true)
    }

    /// Run `f(reason)` once the link closes (at once if it already has).
    pub fn on_close(&self, f: impl FnOnce(String) + Send + 'static) {
        let mut h = self.inner.hooks.lock().expect("hooks lock");
        match &h.closed {
            Some(reason) => {
                let r = reason.clone();
                drop(h);
                f(r);
            }
            None => h.pending.push(Box::new(f)),
        }
    }

    fn send_frames<'a>(&self, frames: impl Iterator<Item = (FrameKind, &'a [u8])>) -> Result<(), ChannelError> {
        let inner = &self.inner;
        let ctx = format!("sending to {}", inner.label);
        // Plaintext is staged in pieces so the encrypted copy stays small.
        const PIECE: usize = 256 << 10;
        let mut sock = inner.wsock.lock().map_err(|_| ChannelError::Disconnected)?;
        let mut stage: Vec<u8> = Vec::with_capacity(PIECE + FRAME_HEADER);
        let flush = |stage: &mut Vec<u8>, sock: &mut TcpStream| -> Result<(), ChannelError> {
            let records = {
                let mut c = inner.conn.lock().map_err(|_| ChannelError::Disconnected)?;
                c.writer().write_all(stage).map_err(io_ctx(&ctx))?;
                let mut out = Vec::with_capacity(stage.len() + 64);
                while c.wants_write() {
                    c.write_tls(&mut out).map_err(io_ctx(&ctx))?;
                }
                out
            };
            stage.clear();
            sock.write_all(&records).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    ChannelError::Timeout { what: format!("{} to accept data", inner.label), secs: inner.limits.io.as_secs_f64() }
                }
                _ => ChannelError::Io { context: ctx.clone(), source: e },
            })
        };
        for (kind, payload) in frames {
            stage.push(kind as u8);
            stage.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            let mut rest = payload;
            loop {
                let take = rest.len().min(PIECE.saturating_sub(stage.len()));
                stage.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if rest.is_empty() {
                    break;
                }
                flush(&mut stage, &mut sock)?;
            }
            if stage.len() >= PIECE {
                flush(&mut stage, &mut sock)?;
            }
        }
        if !stage.is_empty() {
            flush(&mut stage, &mut sock)?;
        }
        Ok(())
    }

    /// Send one protocol message (Data frames).
    pub fn send(&self, msg: &[u8]) -> Result<(), ChannelError> {
        self.send_frames(message_frames(msg))
    }

    /// Send a typed control message (JSON).
    pub fn send_control<T: Serialize>(&self, msg: &T) -> Result<(), ChannelError> {
        let body = serde_json::to_vec(msg).map_err(|e| ChannelError::Malformed(format!("encoding a control message: {e}")))?;
        if body.len() > MAX_FRAME_PAYLOAD {
            return Err(ChannelError::Malformed("control message too large".into()));
        }
        self.send_frames(std::iter::once((FrameKind::Control, body.as_slice())))
    }

    /// Tell the peer why we give up (best effort), then close the link.
    pub fn abort(&self, reason: &str) {
        let r = reason.as_bytes();
        let _ = self.send_frames(std::iter::once((FrameKind::Abort, &r[..r.len().min(64 << 10)])));
        self.shutdown();
    }

    /// Close the socket (the reader thread then ends; pending receives fail).
    pub fn shutdown(&self) {
        let _ = self.inner.sock.shutdown(Shutdown::Both);
    }

    /// Fail this link's receives with `reason` (another link of the same session broke) and
    /// close it, so the peer learns of the failure at once too.
    pub fn poison(&self, reason: &str) {
        let _ = self.inner.tx.send(Incoming::Closed(ChannelError::Aborted(reason.to_string())));
        self.abort(reason);
    }

    /// A reference that does not keep the link open (for hooks of other links).
    pub fn downgrade(&self) -> WeakLink {
        WeakLink { inner: Arc::downgrade(&self.inner) }
    }

    /// The next message or control message within `timeout` (`None`: as long as the link
    /// lives); an abort or the end of the link is an error.
    pub fn recv_any(&self, timeout: Option<Duration>, what: &str) -> Result<Incoming, ChannelError> {
        self.next(timeout, what)
    }

    /// The next incoming item within `timeout` (`None`: wait as long as the link lives).
    fn next(&self, timeout: Option<Duration>, what: &str) -> Result<Incoming, ChannelError> {
        let inner = &self.inner;
        if let Some(d) = inner.dead.lock().map_err(|_| ChannelError::Disconnected)?.as_ref() {
            return Err(ChannelError::Aborted(d.clone()));
        }
        let rx = inner.rx.lock().map_err(|_| ChannelError::Disconnected)?;
        let item = match timeout {
            Some(t) => {
                // Wait in slices; give up only once nothing at all arrived for `t`.
                let start = Instant::now();
                loop {
                    match rx.recv_timeout(t.min(Duration::from_millis(200))) {
                        Ok(item) => break item,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return Err(ChannelError::Disconnected),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let heard = inner.epoch + Duration::from_nanos(inner.progress.load(Ordering::Relaxed));
                            if heard.max(start).elapsed() >= t {
                                return Err(ChannelError::Timeout {
                                    what: format!("{what} from {}", inner.label),
                                    secs: t.as_secs_f64(),
                                });
                            }
                        }
                    }
                }
            }
            None => rx.recv().map_err(|_| ChannelError::Disconnected)?,
        };
        match item {
            Incoming::Closed(e) => {
                *inner.dead.lock().map_err(|_| ChannelError::Disconnected)? = Some(e.to_string());
                Err(e)
            }
            Incoming::Abort(reason) => {
                let msg = format!("{} gave up: {reason}", inner.label);
                *inner.dead.lock().map_err(|_| ChannelError::Disconnected)? = Some(msg.clone());
                Err(ChannelError::Aborted(msg))
            }
            other => Ok(other),
        }
    }

    /// The next protocol message (a control frame here is a protocol violation).
    pub fn recv_message(&self, timeout: Option<Duration>) -> Result<Vec<u8>, ChannelError> {
        match self.next(timeout, "a protocol message")? {
            Incoming::Message(m) => Ok(m),
            Incoming::Control(c) => Err(ChannelError::Malformed(format!(
                "{}: control message where a protocol message was expected: {}",
                self.inner.label,
                String::from_utf8_lossy(&c[..c.len().min(200)])
            ))),
            _ => unreachable!("next() maps Abort and Closed to errors"),
        }
    }

    /// The next control message, decoded as `T`.
    pub fn recv_control<T: DeserializeOwned>(&self, timeout: Option<Duration>, what: &str) -> Result<T, ChannelError> {
        match self.next(timeout, what)? {
            Incoming::Control(c) => serde_json::from_slice(&c)
                .map_err(|e| ChannelError::Malformed(format!("{}: bad control message ({what}): {e}", self.inner.label))),
            Incoming::Message(m) => Err(ChannelError::Malformed(format!(
                "{}: a {}-byte protocol message where {what} was expected",
                self.inner.label,
                m.len()
            ))),
            _ => unreachable!("next() maps Abort and Closed to errors"),
        }
    }

    /// The link as a protocol [`Channel`] whose receives wait at most `timeout`.
    pub fn channel(&self, timeout: Duration) -> LinkChannel {
        LinkChannel { link: self.clone(), timeout }
    }
}

fn prepare_socket(sock: &TcpStream, limits: LinkLimits, label: &str) -> Result<(), ChannelError> {
    // Small messages (one round's opening can be a few bytes) must not wait for Nagle.
    sock.set_nodelay(true).map_err(io_ctx(label))?;
    sock.set_read_timeout(Some(limits.handshake)).map_err(io_ctx(label))?;
    sock.set_write_timeout(Some(limits.io)).map_err(io_ctx(label))?;
    Ok(())
}

/// Where the reader records that bytes arrived.
struct Progress {
    at: Arc<AtomicU64>,
    epoch: Instant,
}

fn reader_loop(
    mut sock: TcpStream,
    conn: Arc<Mutex<rustls::Connection>>,
    tx: mpsc::Sender<Incoming>,
    hooks: Arc<Mutex<Hooks>>,
    label: String,
    limits: LinkLimits,
    progress: Progress,
) {
    let reason = read_frames(&mut sock, &conn, &tx, &label, limits, &progress);
    let text = reason.to_string();
    let _ = tx.send(Incoming::Closed(reason));
    let pending = {
        let Ok(mut h) = hooks.lock() else { return };
        h.closed = Some(text.clone());
        std::mem::take(&mut h.pending)
    };
    for f in pending {
        f(text.clone());
    }
}

/// Read until the link ends; returns why it ended.
fn read_frames(
    sock: &mut TcpStream,
    conn: &Mutex<rustls::Connection>,
    tx: &mpsc::Sender<Incoming>,
    label: &str,
    limits: LinkLimits,
    progress: &Progress,
) -> ChannelError {
    let mut dec = FrameDecoder::default();
    let mut re = Reassembler::new(limits.max_message);
    let mut buf = vec![0u8; 256 << 10];
    let mut plain = vec![0u8; 256 << 10];
    let lost = |msg: &str| ChannelError::Io {
        context: format!("link to {label}"),
        source: io::Error::new(io::ErrorKind::ConnectionAborted, msg.to_string()),
    };
    let mut n = 0usize; // bytes read from the socket this turn (none before the first drain)
    loop {
        let mut eof = false;
        {
            let Ok(mut c) = conn.lock() else { return lost("connection state poisoned") };
            let mut rest: &[u8] = &buf[..n];
            loop {
                if !rest.is_empty() {
                    if let Err(e) = c.read_tls(&mut rest) {
                        return ChannelError::Io { context: format!("reading from {label}"), source: e };
                    }
                }
                if let Err(e) = c.process_new_packets() {
                    return ChannelError::Io { context: format!("TLS from {label}"), source: tls_err(e) };
                }
                loop {
                    match c.reader().read(&mut plain) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(k) => dec.push(&plain[..k]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            eof = true;
                            break;
                        }
                        Err(e) => return ChannelError::Io { context: format!("reading from {label}"), source: e },
                    }
                }
                if rest.is_empty() || eof {
                    break;
                }
            }
        }
        let from_peer = |e: ChannelError| match e {
            ChannelError::Malformed(m) => ChannelError::Malformed(format!("from {label}: {m}")),
            e => e,
        };
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => match re.push(f) {
                    Ok(Some(item)) => {
                        if tx.send(item).is_err() {
                            return lost("link dropped");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return from_peer(e),
                },
                Ok(None) => break,
                Err(e) => return from_peer(e),
            }
        }
        if eof {
            return if dec.pending() > 0 {
                ChannelError::Malformed(format!("{label} closed the link inside a frame ({} bytes pending)", dec.pending()))
            } else {
                lost("connection closed by the peer")
            };
        }
        n = match sock.read(&mut buf) {
            Ok(0) => {
                return if dec.pending() > 0 {
                    ChannelError::Malformed(format!("{label} closed the link inside a frame ({} bytes pending)", dec.pending()))
                } else {
                    lost("connection closed by the peer")
                }
            }
            Ok(k) => {
                progress.at.store(progress.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                k
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return ChannelError::Io { context: format!("link to {label}"), source: e },
        };
    }
}

/// A [`Link`] that may have closed.
#[derive(Clone)]
pub struct WeakLink {
    inner: std::sync::Weak<LinkInner>,
}

impl WeakLink {
    pub fn upgrade(&self) -> Option<Link> {
        self.inner.upgrade().map(|inner| Link { inner })
    }
}

/// A [`Link`] as a protocol [`Channel`].
pub struct LinkChannel {
    link: Link,
    timeout: Duration,
}

impl LinkChannel {
    pub fn link(&self) -> &Link {
        &self.link
    }
}

impl Channel for LinkChannel {
    fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        self.link.send(&msg)
    }
    fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        self.link.recv_message(Some(self.timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = FrameKind> {
        prop_oneof![Just(FrameKind::Data), Just(FrameKind::DataPart), Just(FrameKind::Control), Just(FrameKind::Abort)]
    }

    fn decode_all(bytes: &[u8], chunk: usize, max: usize) -> Result<(Vec<Frame>, usize), ChannelError> {
        let mut d = FrameDecoder::new(max);
        let mut out = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            d.push(c);
            while let Some(f) = d.next_frame()? {
                out.push(f);
            }
        }
        Ok((out, d.pending()))
    }

    proptest! {
        #[test]
        fn frames_roundtrip_in_any_chunking(
            frames in prop::collection::vec((kind(), prop::collection::vec(any::<u8>(), 0..300)), 0..12),
            chunk in 1usize..64,
        ) {
            let mut bytes = Vec::new();
            for (k, p) in &frames {
                encode_frame(*k, p, &mut bytes);
            }
            let (got, pending) = decode_all(&bytes, chunk, MAX_FRAME_PAYLOAD).unwrap();
            prop_assert_eq!(pending, 0);
            let want: Vec<Frame> = frames.into_iter().map(|(kind, payload)| Frame { kind, payload }).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn truncated_frames_stay_pending(payload in prop::collection::vec(any::<u8>(), 1..200), cut in 1usize..200) {
            let mut bytes = Vec::new();
            encode_frame(FrameKind::Data, &payload, &mut bytes);
            let cut = cut.min(bytes.len() - 1);
            let (got, pending) = decode_all(&bytes[..cut], 7, MAX_FRAME_PAYLOAD).unwrap();
            prop_assert!(got.is_empty());
            prop_assert_eq!(pending, cut, "a truncated frame is never delivered");
        }

        #[test]
        fn oversized_lengths_are_rejected_from_the_header(len in 65usize..u32::MAX as usize, k in kind()) {
            let mut bytes = vec![k as u8];
            bytes.extend_from_slice(&(len as u32).to_le_bytes());
            let err = decode_all(&bytes, 5, 64).unwrap_err();
            prop_assert!(matches!(err, ChannelError::Malformed(_)), "{err}");
        }

        #[test]
        fn unknown_kinds_are_rejected(b in any::<u8>().prop_filter("unknown", |b| FrameKind::from_byte(*b).is_none())) {
            let err = decode_all(&[b, 0, 0, 0, 0], 1, 64).unwrap_err();
            prop_assert!(matches!(err, ChannelError::Malformed(_)));
        }

        #[test]
        fn messages_reassemble_across_fragments(msg in prop::collection::vec(any::<u8>(), 0..2000), part in 1usize..300) {
            // Fragment with a small frame size to exercise DataPart.
            let mut bytes = Vec::new();
            let n = msg.len().div_ceil(part).max(1);
            for i in 0..n {
                let c = &msg[(i * part).min(msg.len())..((i + 1) * part).min(msg.len())];
                encode_frame(if i + 1 == n { FrameKind::Data } else { FrameKind::DataPart }, c, &mut bytes);
            }
            let (frames, _) = decode_all(&bytes, 13, 300).unwrap();
            let mut re = Reassembler::new(2000);
            let mut out = Vec::new();
            for f in frames {
                if let Some(Incoming::Message(m)) = re.push(f).unwrap() {
                    out.push(m);
                }
            }
            prop_assert_eq!(out, vec![msg]);
        }
    }

    #[test]
    fn message_limit_and_interleaving_are_enforced() {
        let mut re = Reassembler::new(10);
        assert!(re.push(Frame { kind: FrameKind::DataPart, payload: vec![0; 6] }).unwrap().is_none());
        assert!(matches!(re.push(Frame { kind: FrameKind::Data, payload: vec![0; 6] }), Err(ChannelError::Malformed(_))));
        let mut re = Reassembler::new(100);
        re.push(Frame { kind: FrameKind::DataPart, payload: vec![1] }).unwrap();
        assert!(matches!(re.push(Frame { kind: FrameKind::Control, payload: vec![] }), Err(ChannelError::Malformed(_))));
    }

    #[test]
    fn large_messages_split_into_bounded_frames() {
        let msg = vec![7u8; MAX_FRAME_PAYLOAD * 2 + 3];
        let frames: Vec<(FrameKind, usize)> = message_frames(&msg).map(|(k, c)| (k, c.len())).collect();
        assert_eq!(
            frames,
            vec![(FrameKind::DataPart, MAX_FRAME_PAYLOAD), (FrameKind::DataPart, MAX_FRAME_PAYLOAD), (FrameKind::Data, 3)]
        );
        assert_eq!(message_frames(&[]).count(), 1, "an empty message is one empty Data frame");
    }
}
