//! The long-running processes of `kd party`: P0, P1 and the dealer (topology and failure
//! handling in the module docs of `deploy`).
//!
//! P0 and P1 run one main thread that owns the session (the executor's [`Party`] and the
//! prepared model) and an acceptor thread that completes TLS handshakes and first messages
//! and hands authenticated links to the main thread as events. Protocol work happens only on
//! the main thread, so queries are strictly sequential.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bundle::PartyBundle;
use super::config::DeployConfig;
use super::wire::{describe_protocol, is_id, random_id, short, Control, QueryStats, WireSeed, PROTOCOL};
use super::DeployError;
use crate::mpc::channel::ChannelError;
use crate::mpc::dealer::{Dealer, DealerLink};
use crate::mpc::model::PrivateBert;
use crate::mpc::net::{Identity, Link, LinkLimits, Role};
use crate::mpc::party::Party;
use crate::mpc::prg::Seed;

/// Timestamped log lines on stderr, prefixed with the role.
#[derive(Clone)]
pub struct Log {
    role: Role,
    t0: Instant,
}

impl Log {
    pub fn new(role: Role) -> Self {
        Self { role, t0: Instant::now() }
    }
    pub fn line(&self, msg: impl std::fmt::Display) {
        eprintln!("[{} {:9.3}s] {msg}", self.role, self.t0.elapsed().as_secs_f64());
    }
}

enum Event {
    /// An authenticated link and its first control message.
    Incoming { link: Link, hello: Control },
    /// A link of session `epoch` closed.
    Lost { epoch: u64, reason: String },
}

/// Which first messages a role accepts from which peer role.
fn admissible(me: Role, peer: Role, hello: &Control) -> Result<(), String> {
    let ok = matches!(
        (me, peer, hello),
        (Role::P0 | Role::P1, Role::Dealer, Control::Session { .. })
            | (Role::P0, Role::P1, Control::PeerHello { .. })
            | (Role::P0 | Role::P1, Role::Client, Control::ClientHello { .. })
    );
    if !ok {
        return Err(format!("a {peer} certificate may not open a {} link to {me}", hello.kind()));
    }
    let proto = match hello {
        Control::Session { protocol, .. } | Control::PeerHello { protocol, .. } | Control::ClientHello { protocol, .. } => *protocol,
        _ => PROTOCOL,
    };
    if proto != PROTOCOL {
        return Err(format!(
            "{peer} speaks protocol version {proto} ({}), {me} speaks {PROTOCOL} ({}): run the same kd release on every party",
            describe_protocol(proto),
            describe_protocol(PROTOCOL)
        ));
    }
    let id = match hello {
        Control::Session { sid, .. } | Control::PeerHello { sid, .. } => sid,
        Control::ClientHello { qid, .. } => qid,
        _ => return Ok(()),
    };
    if !is_id(id) {
        return Err("session and query ids are 32 hex digits".into());
    }
    Ok(())
}

fn spawn_acceptor(listener: TcpListener, identity: Arc<Identity>, limits: LinkLimits, tx: Sender<Event>, log: Log) {
    let me = identity.role;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    log.line(format!("accept failed: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let (identity, tx, log) = (identity.clone(), tx.clone(), log.clone());
            // One thread per handshake: a slow or silent peer cannot hold up the others.
            std::thread::spawn(move || {
                let link = match Link::accept(stream, &identity, limits) {
                    Ok(l) => l,
                    Err(e) => return log.line(format!("refused a connection: {e}")),
                };
                let hello = match link.recv_control::<Control>(Some(limits.handshake), "a hello") {
                    Ok(h) => h,
                    Err(e) => {
                        log.line(format!("dropped {}: {e}", link.label()));
                        return link.abort(&format!("no valid hello: {e}"));
                    }
                };
                if let Err(reason) = admissible(me, link.peer(), &hello) {
                    log.line(format!("refused {}: {reason}", link.label()));
                    return link.abort(&reason);
                }
                let _ = tx.send(Event::Incoming { link, hello });
            });
        }
    });
}

/// A failure while serving a query: does the session survive it?
struct QueryFailure {
    session_broken: bool,
    error: DeployError,
}

fn client_fail(e: impl Into<DeployError>) -> QueryFailure {
    QueryFailure { session_broken: false, error: e.into() }
}

fn session_fail(e: impl Into<DeployError>) -> QueryFailure {
    QueryFailure { session_broken: true, error: e.into() }
}

/// A prepared session between P0, P1 and the dealer.
struct Session {
    epoch: u64,
    sid: String,
    party: Party,
    model: PrivateBert,
    peer: Link,
    dealer: Link,
    queries: u64,
    prepare_seconds: f64,
}

impl Session {
    /// Close the session's links, telling the peers why.
    fn end(self, reason: &str) {
        self.peer.abort(reason);
        self.dealer.abort(reason);
    }
}

/// P0 or P1.
pub struct PartyServer {
    role: Role,
    id: usize,
    identity: Arc<Identity>,
    cfg: DeployConfig,
    limits: LinkLimits,
    bundle: PartyBundle,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    log: Log,
    /// The address the listener got (the config may ask for port 0).
    pub local_addr: std::net::SocketAddr,
    listener: Option<TcpListener>,
}

impl PartyServer {
    /// Load the identity and the bundle, and bind the listening socket.
    pub fn new(role: Role, cfg: DeployConfig) -> Result<Self, DeployError> {
        let id = role.party_id().ok_or_else(|| DeployError::Protocol(format!("{role} is not a computing party")))?;
        let identity = Arc::new(Identity::load(role, &cfg.tls.cert, &cfg.tls.key, &cfg.tls.ca)?);
        let bundle = PartyBundle::load(cfg.bundle.as_deref().expect("checked by DeployConfig::load"), id as u8)?;
        let limits = cfg.link_limits()?;
        let addr = cfg.listen.clone().expect("checked by DeployConfig::load");
        let listener = TcpListener::bind(&addr).map_err(|source| DeployError::Io { what: format!("listening on {addr}"), source })?;
        let local_addr = listener.local_addr().map_err(|source| DeployError::Io { what: "listener address".into(), source })?;
        let (events_tx, events) = mpsc::channel();
        Ok(Self { role, id, identity, cfg, limits, bundle, events_tx, events, log: Log::new(role), local_addr, listener: Some(listener) })
    }

    /// Serve until killed (returns only on a setup error).
    pub fn run(mut self) -> Result<(), DeployError> {
        let listener = self.listener.take().expect("run once");
        self.log.line(format!(
            "listening on {} (model {}, {} weight tensors, frac bits {})",
            self.local_addr,
            short(&self.bundle.public.manifest.fingerprint, 16),
            self.bundle.shares.len(),
            self.bundle.public.manifest.frac_bits
        ));
        spawn_acceptor(listener, self.identity.clone(), self.limits, self.events_tx.clone(), self.log.clone());
        match self.role {
            Role::P0 => self.run_p0(),
            _ => self.run_p1(),
        }
    }

    fn io(&self) -> Duration {
        self.limits.io
    }

    /// Join session `sid`: watch its links, build the party context and prepare the weights.
    fn establish(&self, epoch: u64, sid: String, seed: Seed, peer: Link, dealer: Link) -> Result<Session, DeployError> {
        for (a, b) in [(&peer, &dealer), (&dealer, &peer)] {
            let (tx, other) = (self.events_tx.clone(), b.downgrade());
            a.on_close(move |why| {
                let reason = format!("session link lost: {why}");
                if let Some(o) = other.upgrade() {
                    o.poison(&reason);
                }
                let _ = tx.send(Event::Lost { epoch, reason });
            });
        }
        let dl = if self.id == 0 {
            DealerLink::new(0, seed, None)
        } else {
            DealerLink::new(1, seed, Some(Box::new(dealer.channel(self.io()))))
        };
        let mut party = Party::new(self.id, Box::new(peer.channel(self.io())), dl);
        let t = Instant::now();
        let pm = &self.bundle.public;
        let model = PrivateBert::prepare(&mut party, &self.bundle.shares, &pm.config, pm.manifest.frac_bits).inspect_err(|e| {
            peer.abort(&format!("{} failed to prepare the model: {e}", self.role));
            dealer.abort(&format!("{} failed to prepare the model: {e}", self.role));
        })?;
        let prepare_seconds = t.elapsed().as_secs_f64();
        self.log.line(format!("session {} ready: weights prepared in {prepare_seconds:.2} s", short(&sid, 8)));
        Ok(Session { epoch, sid, party, model, peer, dealer, queries: 0, prepare_seconds })
    }

    /// The query's forward pass with `client` as the client link (common to P0 and P1).
    fn forward(&self, s: &mut Session, client: &Link, seed: Seed, type_ids: &[u32]) -> Result<QueryStats, DeployError> {
        s.party.reseed(seed)?;
        s.party.set_client(Box::new(client.channel(self.io())));
        s.party.flush_time();
        let (before, prep_before) = (s.party.totals(), s.party.prep_seconds);
        let t = Instant::now();
        let r = s.model.forward(&mut s.party, type_ids, None);
        let seconds = t.elapsed().as_secs_f64();
        drop(s.party.take_client());
        r?;
        s.party.flush_time();
        let d = s.party.totals().sub(&before);
        s.queries += 1;
        let stats = QueryStats {
            party: self.id,
            seq_len: type_ids.len(),
            rounds: d.rounds,
            bytes_sent: d.bytes_sent,
            client_bytes: d.client_bytes,
            seconds,
            offline_seconds: s.party.prep_seconds - prep_before,
            session_queries: s.queries,
            prepare_seconds: s.prepare_seconds,
        };
        // The logits share is out; a client that left now loses only the statistics.
        let _ = client.send_control(&Control::QueryDone { stats: stats.clone() });
        Ok(stats)
    }

    /// A client's hello, checked against this party's model before any peer is involved.
    fn check_hello(&self, fingerprint: &str, type_ids: &[u32]) -> Result<(), String> {
        let pm = &self.bundle.public;
        if fingerprint != pm.manifest.fingerprint {
            return Err(format!(
                "the client's public bundle is for model {}, this party serves {}",
                short(fingerprint, 16),
                short(&pm.manifest.fingerprint, 16)
            ));
        }
        let c = &pm.config;
        if type_ids.is_empty() || type_ids.len() > c.max_position_embeddings {
            return Err(format!("sequence length {} outside 1..={}", type_ids.len(), c.max_position_embeddings));
        }
        if let Some(t) = type_ids.iter().find(|&&t| t as usize >= c.type_vocab_size) {
            return Err(format!("token type id {t} outside the model's {} types", c.type_vocab_size));
        }
        Ok(())
    }

    fn report(&self, qid: &str, r: &Result<QueryStats, QueryFailure>) {
        match r {
            Ok(s) => self.log.line(format!(
                "query {} done: {} tokens, {:.3} s, {} rounds, {:.1} MB to the peer",
                short(qid, 8),
                s.seq_len,
                s.seconds,
                s.rounds,
                s.bytes_sent as f64 / 1e6
            )),
            Err(f) => self.log.line(format!(
                "query {} failed{}: {}",
                short(qid, 8),
                if f.session_broken { " (ending the session)" } else { "" },
                f.error
            )),
        }
    }

    fn run_p0(self) -> Result<(), DeployError> {
        let mut pending_dealer: Option<(String, Seed, Link)> = None;
        let mut pending_peer: Option<(String, Link)> = None;
        let mut queue: VecDeque<(String, String, Vec<u32>, Link, Instant)> = VecDeque::new();
        let mut session: Option<Session> = None;
        let mut epoch = 0u64;
        // Since when P0 has had no session (None while it has one).
        let mut no_session_since = Some(Instant::now());
        loop {
            match (&session, no_session_since) {
                (Some(_), _) => no_session_since = None,
                (None, None) => no_session_since = Some(Instant::now()),
                (None, Some(_)) => {}
            }
            if session.is_none() {
                if pending_dealer.as_ref().is_some_and(|d| d.2.is_closed()) {
                    pending_dealer = None;
                }
                if pending_peer.as_ref().is_some_and(|p| p.1.is_closed()) {
                    pending_peer = None;
                }
                if let (Some(d), Some(p)) = (&pending_dealer, &pending_peer) {
                    if d.0 == p.0 {
                        let (sid, seed, dl) = pending_dealer.take().expect("checked");
                        let (_, pl) = pending_peer.take().expect("checked");
                        epoch += 1;
                        match self.establish(epoch, sid, seed, pl, dl) {
                            Ok(s) => session = Some(s),
                            Err(e) => self.log.line(format!("session setup failed: {e}")),
                        }
                        continue;
                    }
                }
            }
            if let Some(s) = session.as_mut() {
                if let Some((qid, fp, type_ids, client, _)) = queue.pop_front() {
                    let r = self.serve_p0(s, &qid, &fp, &type_ids, &client);
                    self.report(&qid, &r);
                    if let Err(f) = r {
                        client.abort(&f.error.to_string());
                        if f.session_broken {
                            session.take().expect("some").end(&format!("p0 ended the session: {}", f.error));
                        }
                    }
                    continue;
                }
            }
            if let Some(since) = no_session_since {
                // Without a session a query cannot start; do not keep a client waiting for one
                // longer than the io timeout.
                while queue.front().is_some_and(|q| q.4.max(since).elapsed() > self.io()) {
                    let (qid, .., link, _) = queue.pop_front().expect("checked");
                    self.log.line(format!("refused query {}: no session", short(&qid, 8)));
                    link.abort(&format!("p0 has no session with p1 and the dealer (waited {:.0} s)", self.io().as_secs_f64()));
                }
            }
            let ev = if session.is_none() && !queue.is_empty() {
                match self.events.recv_timeout(Duration::from_millis(500)) {
                    Ok(ev) => ev,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => unreachable!("the acceptor holds a sender"),
                }
            } else {
                self.events.recv().expect("the acceptor holds a sender")
            };
            match ev {
                Event::Incoming { link, hello: Control::Session { sid, seed, .. } } => {
                    if let Some(s) = session.take() {
                        self.log.line("the dealer opened a new session; ending the current one");
                        s.end("the dealer opened a new session");
                    }
                    pending_dealer = Some((sid, seed.0, link));
                }
                Event::Incoming { link, hello: Control::PeerHello { sid, .. } } => {
                    if let Some(s) = session.take() {
                        self.log.line("p1 rejoined; ending the current session");
                        s.end("p1 rejoined");
                    }
                    pending_peer = Some((sid, link));
                }
                Event::Incoming { link, hello: Control::ClientHello { qid, fingerprint, type_ids, .. } } => {
                    if queue.len() >= self.cfg.limits.max_queue {
                        self.log.line(format!("refused query {}: {} queries waiting", short(&qid, 8), queue.len()));
                        link.abort(&format!("busy: {} queries are waiting (limits.max_queue)", queue.len()));
                    } else {
                        queue.push_back((qid, fingerprint, type_ids, link, Instant::now()));
                    }
                }
                Event::Incoming { link, hello } => link.abort(&format!("unexpected {}", hello.kind())),
                Event::Lost { epoch: e, reason } => {
                    if let Some(s) = session.as_ref().filter(|s| s.epoch == e) {
                        self.log.line(format!("session {} ended: {reason}", short(&s.sid, 8)));
                        session.take().expect("some").end(&reason);
                    }
                }
            }
        }
    }

    fn serve_p0(&self, s: &mut Session, qid: &str, fp: &str, type_ids: &[u32], client: &Link) -> Result<QueryStats, QueryFailure> {
        if client.is_closed() {
            return Err(client_fail(DeployError::Protocol("the client left while queued".into())));
        }
        self.check_hello(fp, type_ids).map_err(|reason| client_fail(DeployError::Refused { role: Role::P0, reason }))?;
        client.send_control(&Control::Start).map_err(client_fail)?;
        self.log.line(format!("query {}: {} tokens", short(qid, 8), type_ids.len()));
        // From here on P1 and the dealer take part: any failure ends the session.
        s.peer.send_control(&Control::QueryStart { qid: qid.into(), type_ids: type_ids.to_vec() }).map_err(session_fail)?;
        let seed = match s.dealer.recv_control::<Control>(Some(self.io()), "the query's seed").map_err(session_fail)? {
            Control::QuerySeed { qid: q, seed } if q == qid => seed.0,
            other => return Err(session_fail(DeployError::Protocol(format!("dealer sent {} instead of the query seed", other.kind())))),
        };
        self.forward(s, client, seed, type_ids).map_err(session_fail)
    }

    fn run_p1(self) -> Result<(), DeployError> {
        let mut pending_dealer: Option<(String, Seed, Link)> = None;
        let mut session: Option<Session> = None;
        let mut epoch = 0u64;
        loop {
            let Some(s) = session.as_mut() else {
                // Take every event that is already there, keeping the newest dealer session.
                while let Ok(ev) = self.events.try_recv() {
                    self.p1_idle_event(ev, &mut pending_dealer);
                }
                match pending_dealer.take() {
                    Some((sid, seed, dl)) if !dl.is_closed() => {
                        epoch += 1;
                        match self.join_session(epoch, sid, seed, dl) {
                            Ok(s) => session = Some(s),
                            Err(e) => self.log.line(format!("session setup failed: {e}")),
                        }
                    }
                    _ => {
                        let ev = self.events.recv().expect("the acceptor holds a sender");
                        self.p1_idle_event(ev, &mut pending_dealer);
                    }
                }
                continue;
            };
            // Between queries: wait for P0 (a broken session link wakes this with the reason).
            let next = s.peer.recv_control::<Control>(None, "the next query");
            let (qid, type_ids) = match next {
                Ok(Control::QueryStart { qid, type_ids }) => (qid, type_ids),
                Ok(other) => {
                    let e = format!("p0 sent {} between queries", other.kind());
                    self.log.line(&e);
                    session.take().expect("some").end(&e);
                    continue;
                }
                Err(e) => {
                    self.log.line(format!("session {} ended: {e}", short(&s.sid, 8)));
                    session.take().expect("some").end(&format!("p1 ended the session: {e}"));
                    continue;
                }
            };
            let mut client = None;
            let r = self.serve_p1(s, &qid, &type_ids, &mut pending_dealer, &mut client);
            self.report(&qid, &r);
            if let Err(f) = r {
                if let Some(c) = client {
                    c.abort(&f.error.to_string());
                }
                session.take().expect("some").end(&format!("p1 ended the session: {}", f.error));
            }
        }
    }

    fn p1_idle_event(&self, ev: Event, pending_dealer: &mut Option<(String, Seed, Link)>) {
        match ev {
            Event::Incoming { link, hello: Control::Session { sid, seed, .. } } => *pending_dealer = Some((sid, seed.0, link)),
            Event::Incoming { link, hello } => {
                link.abort(&format!("p1 has no session with p0 yet ({} refused)", hello.kind()));
            }
            Event::Lost { .. } => {}
        }
    }

    /// Connect to P0 for session `sid` and prepare.
    fn join_session(&self, epoch: u64, sid: String, seed: Seed, dealer: Link) -> Result<Session, DeployError> {
        let addr = self.cfg.peer_addr(Role::P0).to_string();
        let deadline = Instant::now() + self.limits.handshake;
        let peer = loop {
            match Link::connect(&addr, Role::P0, &self.identity, self.limits) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => {
                    dealer.abort(&format!("p1 cannot reach p0: {e}"));
                    return Err(e.into());
                }
            }
        };
        peer.send_control(&Control::PeerHello { protocol: PROTOCOL, sid: sid.clone() })?;
        self.establish(epoch, sid, seed, peer, dealer)
    }

    fn serve_p1(
        &self,
        s: &mut Session,
        qid: &str,
        type_ids: &[u32],
        pending_dealer: &mut Option<(String, Seed, Link)>,
        client_out: &mut Option<Link>,
    ) -> Result<QueryStats, QueryFailure> {
        self.log.line(format!("query {}: {} tokens", short(qid, 8), type_ids.len()));
        s.dealer.send_control(&Control::NewQuery { qid: qid.into() }).map_err(session_fail)?;
        // The client connects once P0 has told it to; earlier hellos of other queries are stale.
        let deadline = Instant::now() + self.io();
        let client = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Incoming { link, hello: Control::ClientHello { qid: q, fingerprint, type_ids: t, .. } }) => {
                    if q != qid {
                        link.abort("p0 is not serving this query (stale or unknown query id)");
                        continue;
                    }
                    *client_out = Some(link.clone());
                    self.check_hello(&fingerprint, &t).map_err(|reason| session_fail(DeployError::Refused { role: Role::P1, reason }))?;
                    if t != type_ids {
                        return Err(session_fail(DeployError::Protocol("the client sent P0 and P1 different token type ids".into())));
                    }
                    break link;
                }
                Ok(Event::Incoming { link, hello: Control::Session { sid, seed, .. } }) => *pending_dealer = Some((sid, seed.0, link)),
                Ok(Event::Incoming { link, hello }) => link.abort(&format!("unexpected {}", hello.kind())),
                Ok(Event::Lost { epoch, reason }) if epoch == s.epoch => {
                    return Err(session_fail(DeployError::Channel(ChannelError::Aborted(reason))))
                }
                Ok(Event::Lost { .. }) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(session_fail(DeployError::Channel(ChannelError::Timeout {
                        what: "the client to connect".into(),
                        secs: self.io().as_secs_f64(),
                    })))
                }
                Err(RecvTimeoutError::Disconnected) => unreachable!("the acceptor holds a sender"),
            }
        };
        let seed = match s.dealer.recv_control::<Control>(Some(self.io()), "the query's seed").map_err(session_fail)? {
            Control::QuerySeed { qid: q, seed } if q == qid => seed.0,
            other => return Err(session_fail(DeployError::Protocol(format!("dealer sent {} instead of the query seed", other.kind())))),
        };
        self.forward(s, &client, seed, type_ids).map_err(session_fail)
    }
}

/// The dealer: connects to P0 and P1, opens sessions and serves P1's requests.
pub struct DealerServer {
    identity: Identity,
    cfg: DeployConfig,
    limits: LinkLimits,
    log: Log,
}

impl DealerServer {
    pub fn new(cfg: DeployConfig) -> Result<Self, DeployError> {
        let identity = Identity::load(Role::Dealer, &cfg.tls.cert, &cfg.tls.key, &cfg.tls.ca)?;
        let limits = cfg.link_limits()?;
        Ok(Self { identity, cfg, limits, log: Log::new(Role::Dealer) })
    }

    /// Connect to `role`, retrying until it answers (parties may start in any order) or
    /// `give_up()` says the attempt is moot.
    fn connect(&self, role: Role, give_up: impl Fn() -> bool) -> Option<Link> {
        let addr = self.cfg.peer_addr(role);
        let mut last_log: Option<Instant> = None;
        loop {
            if give_up() {
                return None;
            }
            match Link::connect(addr, role, &self.identity, self.limits) {
                Ok(l) => return Some(l),
                Err(e) => {
                    if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        self.log.line(format!("waiting for {role}: {e}"));
                        last_log = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Serve sessions until killed.
    pub fn run(self) -> Result<(), DeployError> {
        self.log.line(format!("connecting to p0 at {} and p1 at {}", self.cfg.peer_addr(Role::P0), self.cfg.peer_addr(Role::P1)));
        loop {
            let sid = random_id();
            let (dealer, s0, s1) = Dealer::new();
            // Each party gets its session message right after connecting (an accepted link
            // must say hello within the handshake timeout); if P0 goes away while P1 is
            // still unreachable, start over.
            let p0 = self.connect(Role::P0, || false).expect("never gives up");
            let opened = p0.send_control(&Control::Session { protocol: PROTOCOL, sid: sid.clone(), seed: WireSeed(s0) });
            let Some(p1) = self.connect(Role::P1, || p0.is_closed()) else {
                self.log.line("p0 went away while waiting for p1; starting over");
                continue;
            };
            let opened =
                opened.and_then(|_| p1.send_control(&Control::Session { protocol: PROTOCOL, sid: sid.clone(), seed: WireSeed(s1) }));
            if let Err(e) = opened {
                self.log.line(format!("opening a session failed: {e}"));
                p0.abort("dealer: session setup failed");
                p1.abort("dealer: session setup failed");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            // P0 only receives seeds; if its link breaks, wake the loop below (it waits on P1).
            let weak1 = p1.downgrade();
            p0.on_close(move |why| {
                if let Some(l) = weak1.upgrade() {
                    l.poison(&format!("session link lost: {why}"));
                }
            });
            self.log.line(format!("session {} opened", short(&sid, 8)));
            let (reason, queries) = self.serve(dealer, &p0, &p1);
            self.log.line(format!("session {} ended after {queries} queries: {reason}", short(&sid, 8)));
            p0.abort(&format!("dealer ended the session: {reason}"));
            p1.abort(&format!("dealer ended the session: {reason}"));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn serve(&self, mut dealer: Dealer, p0: &Link, p1: &Link) -> (DeployError, u64) {
        let mut queries = 0;
        loop {
            let item = match p1.recv_any(None, "a request") {
                Ok(i) => i,
                Err(e) => return (e.into(), queries),
            };
            let r = match item {
                crate::mpc::net::Incoming::Message(m) => dealer.answer(&m).and_then(|c| p1.send(&c)).map_err(DeployError::from),
                crate::mpc::net::Incoming::Control(c) => match serde_json::from_slice::<Control>(&c) {
                    Ok(Control::NewQuery { qid }) => {
                        queries += 1;
                        let (s0, s1) = dealer.reseed();
                        p0.send_control(&Control::QuerySeed { qid: qid.clone(), seed: WireSeed(s0) })
                            .and_then(|_| p1.send_control(&Control::QuerySeed { qid, seed: WireSeed(s1) }))
                            .map_err(DeployError::from)
                    }
                    Ok(other) => Err(DeployError::Protocol(format!("p1 sent {}", other.kind()))),
                    Err(e) => Err(DeployError::Protocol(format!("bad control message from p1: {e}"))),
                },
                _ => Err(DeployError::Protocol("unexpected item".into())),
            };
            if let Err(e) = r {
                return (e, queries);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hello from a binary with another executor schedule (or message set) is refused with
    /// both versions named; the same versions pass.
    #[test]
    fn hellos_of_another_schedule_or_wire_version_are_refused() {
        let sid = "0123456789abcdef0123456789abcdef".to_string();
        let hello = |protocol| Control::PeerHello { protocol, sid: sid.clone() };
        assert!(admissible(Role::P0, Role::P1, &hello(PROTOCOL)).is_ok());
        for other in [PROTOCOL + 1, PROTOCOL + (1 << 16)] {
            let e = admissible(Role::P0, Role::P1, &hello(other)).unwrap_err();
            assert!(e.contains(&describe_protocol(other)) && e.contains(&describe_protocol(PROTOCOL)), "{e}");
        }
        assert_eq!(PROTOCOL & 0xffff, crate::mpc::SCHEDULE_VERSION);
    }
}
