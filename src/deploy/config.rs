//! The TOML file of one deployed process (`kd party --config`, `kd query --config`).
//!
//! ```toml
//! listen = "0.0.0.0:7000"      # p0, p1: where this party accepts links
//! bundle = "shares/p0"         # p0, p1: this party's share bundle; client: the public bundle
//!
//! [tls]                        # relative paths are relative to this file
//! cert = "certs/p0.pem"
//! key = "certs/p0.key"
//! ca = "certs/ca.pem"
//!
//! [peers]                      # who this role connects to
//! p0 = "10.0.0.1:7000"         # needed by p1, the dealer and the client
//! p1 = "10.0.0.2:7000"         # needed by the dealer and the client
//!
//! [timeouts]                   # seconds
//! handshake = 10               # TCP connect + TLS handshake (+ the first hello)
//! io = 60                      # longest silence on a link during a protocol (a stall)
//! query = 600                  # client: the longest wait for a whole query (queue included)
//!
//! [limits]
//! max_queue = 8                # p0: clients waiting beyond this are refused as busy
//! max_message_mib = 1024       # largest protocol message accepted on a link
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::mpc::net::{LinkLimits, Role};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peers {
    pub p0: Option<String>,
    pub p1: Option<String>,
}

fn d_handshake() -> f64 {
    10.0
}
fn d_io() -> f64 {
    60.0
}
fn d_query() -> f64 {
    600.0
}
fn d_queue() -> usize {
    8
}
fn d_max_message() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "d_handshake")]
    pub handshake: f64,
    #[serde(default = "d_io")]
    pub io: f64,
    #[serde(default = "d_query")]
    pub query: f64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { handshake: d_handshake(), io: d_io(), query: d_query() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "d_queue")]
    pub max_queue: usize,
    #[serde(default = "d_max_message")]
    pub max_message_mib: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_queue: d_queue(), max_message_mib: d_max_message() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    pub listen: Option<String>,
    pub bundle: Option<PathBuf>,
    pub tls: TlsPaths,
    #[serde(default)]
    pub peers: Peers,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    /// Where this file was read from (errors name it).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub msg: String,
}

fn secs(v: f64, what: &str, path: &Path) -> Result<Duration, ConfigError> {
    if !(v.is_finite() && v > 0.0 && v < 1e7) {
        return Err(ConfigError { path: path.to_path_buf(), msg: format!("timeouts.{what} = {v} must be a positive number of seconds") });
    }
    Ok(Duration::from_secs_f64(v))
}

impl DeployConfig {
    /// Read and check the file for `role`: the fields that role needs must be present.
    pub fn load(path: &Path, role: Role) -> Result<Self, ConfigError> {
        let err = |msg: String| ConfigError { path: path.to_path_buf(), msg };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut c: DeployConfig = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        c.path = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rel(&mut c.tls.cert);
        rel(&mut c.tls.key);
        rel(&mut c.tls.ca);
        if let Some(b) = c.bundle.as_mut() {
            rel(b);
        }
        let need = |ok: bool, what: &str| if ok { Ok(()) } else { Err(err(format!("role {role} needs `{what}`"))) };
        match role {
            Role::P0 => {
                need(c.listen.is_some(), "listen")?;
                need(c.bundle.is_some(), "bundle")?;
            }
            Role::P1 => {
                need(c.listen.is_some(), "listen")?;
                need(c.bundle.is_some(), "bundle")?;
                need(c.peers.p0.is_some(), "peers.p0")?;
            }
            Role::Dealer => {
                need(c.peers.p0.is_some(), "peers.p0")?;
                need(c.peers.p1.is_some(), "peers.p1")?;
            }
            Role::Client => {
                need(c.bundle.is_some(), "bundle")?;
                need(c.peers.p0.is_some(), "peers.p0")?;
                need(c.peers.p1.is_some(), "peers.p1")?;
            }
        }
        c.io()?;
        c.query()?;
        c.link_limits()?;
        if c.limits.max_message_mib == 0 || c.limits.max_message_mib > 16 << 10 {
            return Err(err(format!("limits.max_message_mib = {} is outside 1..=16384", c.limits.max_message_mib)));
        }
        Ok(c)
    }

    pub fn io(&self) -> Result<Duration, ConfigError> {
        secs(self.timeouts.io, "io", &self.path)
    }

    pub fn query(&self) -> Result<Duration, ConfigError> {
        secs(self.timeouts.query, "query", &self.path)
    }

    pub fn link_limits(&self) -> Result<LinkLimits, ConfigError> {
        Ok(LinkLimits {
            handshake: secs(self.timeouts.handshake, "handshake", &self.path)?,
            io: self.io()?,
            max_message: self.limits.max_message_mib << 20,
        })
    }

    /// The address of a computing party this role connects to.
    pub fn peer_addr(&self, role: Role) -> &str {
        match role {
            Role::P0 => self.peers.p0.as_deref(),
            Role::P1 => self.peers.p1.as_deref(),
            _ => None,
        }
        .expect("checked by load() for the roles that connect")
    }
}
