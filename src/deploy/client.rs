//! The client of `kd query`: the data owner. It holds the public bundle (config, tokenizer,
//! fixed-point bits, fingerprint), tokenises locally, and runs `mpc::model::client_infer` over
//! TLS links to P0 and P1: it sends only X − A (a one-time pad of the one-hot tokens) and the
//! public token type ids, and it alone reconstructs the logits.

use std::time::{Duration, Instant};

use super::bundle::PublicModel;
use super::config::DeployConfig;
use super::wire::{random_id, Control, QueryStats, PROTOCOL};
use super::DeployError;
use crate::mpc::channel::{Channel, ChannelError};
use crate::mpc::model::client_infer;
use crate::mpc::net::{Identity, Link, LinkLimits, Role};

/// One answered query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub logits: Vec<f64>,
    /// From connecting to P0 until the logits were reconstructed (queueing included).
    pub wall_seconds: f64,
    /// Time waiting in P0's queue (until P0 said the query is next).
    pub queued_seconds: f64,
    /// What each party reported (absent if a party left after sending its logits share).
    pub parties: [Option<QueryStats>; 2],
}

pub struct Client {
    identity: Identity,
    cfg: DeployConfig,
    limits: LinkLimits,
    query_timeout: Duration,
    pub public: PublicModel,
}

impl Client {
    pub fn new(cfg: DeployConfig) -> Result<Self, DeployError> {
        let identity = Identity::load(Role::Client, &cfg.tls.cert, &cfg.tls.key, &cfg.tls.ca)?;
        let public = PublicModel::load(cfg.bundle.as_deref().expect("checked by DeployConfig::load"))?;
        let limits = cfg.link_limits()?;
        let query_timeout = cfg.query()?;
        Ok(Self { identity, cfg, limits, query_timeout, public })
    }

    /// Connect, retrying a refused connection until the handshake timeout (a party that is
    /// still starting or restarting).
    fn connect(&self, role: Role) -> Result<Link, ChannelError> {
        let deadline = Instant::now() + self.limits.handshake;
        loop {
            match Link::connect(self.cfg.peer_addr(role), role, &self.identity, self.limits) {
                Err(ChannelError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::ConnectionRefused && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                r => return r,
            }
        }
    }

    /// Private inference of one tokenised input.
    pub fn infer(&self, ids: &[u32], type_ids: &[u32]) -> Result<QueryResult, DeployError> {
        if ids.len() != type_ids.len() {
            return Err(DeployError::Protocol(format!("{} token ids but {} type ids", ids.len(), type_ids.len())));
        }
        let t = Instant::now();
        let qid = random_id();
        let hello = Control::ClientHello {
            protocol: PROTOCOL,
            qid,
            fingerprint: self.public.manifest.fingerprint.clone(),
            type_ids: type_ids.to_vec(),
        };
        let l0 = self.connect(Role::P0)?;
        l0.send_control(&hello)?;
        match l0.recv_control::<Control>(Some(self.query_timeout), "the start of the query")? {
            Control::Start => {}
            other => return Err(DeployError::Protocol(format!("p0 answered {} instead of start", other.kind()))),
        }
        let queued_seconds = t.elapsed().as_secs_f64();
        let l1 = self.connect(Role::P1)?;
        l1.send_control(&hello)?;
        let mut links: [Box<dyn Channel>; 2] =
            [Box::new(l0.channel(self.query_timeout)), Box::new(l1.channel(self.query_timeout))];
        let c = &self.public.config;
        let logits = client_infer(&mut links, ids, c.vocab_size, self.public.manifest.num_labels, self.public.manifest.frac_bits)
            .map_err(|e| failure(e, [&l0, &l1]))?;
        let wall_seconds = t.elapsed().as_secs_f64();
        let stats = |l: &Link| match l.recv_control::<Control>(Some(self.limits.io), "the query statistics") {
            Ok(Control::QueryDone { stats }) => Some(stats),
            _ => None,
        };
        let parties = [stats(&l0), stats(&l1)];
        Ok(QueryResult { logits, wall_seconds, queued_seconds, parties })
    }
}

/// The client reads its links in a fixed order, so the first error it sees may be a
/// consequence (a link closed by a party that gave up) rather than the cause; collect what the
/// other link says too.
fn failure(e: crate::mpc::bert::PrivateModelError, links: [&Link; 2]) -> DeployError {
    let mut reasons = vec![e.to_string()];
    for l in links {
        if let Err(r) = l.recv_any(Some(Duration::from_millis(1500)), "the failure reason") {
            let r = r.to_string();
            if !reasons.iter().any(|x| x.contains(&r) || r.contains(x.as_str())) {
                reasons.push(r);
            }
        }
    }
    DeployError::QueryFailed(reasons.join("; "))
}
