//! The deployment end to end: `kd certs`, `kd share`, the three `kd party` roles as separate
//! processes on loopback, and `kd query`, checked against the in-process executor
//! (`run_private`) and the plaintext model; plus faults (a party killed mid-query, a corrupted,
//! a lossy and a stalled link, foreign and wrong-role certificates, wrong and corrupted bundles).
//!
//! Every spawned process is owned by a guard that kills it on drop, and every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpcformer::data::batch::TextEncoder;
use mpcformer::data::{load_split, Task};
use mpcformer::model::{BertConfig, ModelDir};
use mpcformer::mpc::eval::{run_private, PrivateRow};

const KD: &str = env!("CARGO_BIN_EXE_kd");
/// Stall timeout of the deployments in the fault tests (faults must surface within it).
const IO_TIMEOUT: f64 = 4.0;
/// Stall timeout elsewhere: generous, for two test deployments sharing CI's two cores.
const IO_TIMEOUT_RELAXED: f64 = 20.0;

/// A child process that is killed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn `kd args` in `cwd` with stdout/stderr to files (no pipe can fill up).
fn spawn(args: &[&str], cwd: &Path, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let child = Command::new(KD).args(args).current_dir(cwd).stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("kd runs");
    Proc { child }
}

/// Run `kd args` to completion within `secs` (killed and reported otherwise).
fn run(args: &[&str], cwd: &Path, secs: f64) -> Output {
    let (o, e) = (cwd.join(".run.out"), cwd.join(".run.err"));
    let mut child = Command::new(KD)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .expect("kd runs");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kd {args:?} ran longer than {secs} s; stderr: {}", std::fs::read_to_string(&e).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: std::fs::read(&o).unwrap(), stderr: std::fs::read(&e).unwrap() }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A deployment in a temp dir: certificates, share bundles, one config per role.
struct Deployment {
    dir: tempfile::TempDir,
    ports: [u16; 2],
    procs: Vec<(&'static str, Proc)>,
    starts: usize,
}

impl Deployment {
    /// Certificates and bundles for `model`.
    fn new(model: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let o = run(&["certs", "--out", "certs"], d, 60.0);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let o = run(&["share", "--model", model.to_str().unwrap(), "--out", "shares"], d, 300.0);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let dep = Self { dir, ports: [free_port(), free_port()], procs: Vec::new(), starts: 0 };
        dep.write_configs(None);
        dep
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn p0(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    fn p1(&self) -> String {
        format!("127.0.0.1:{}", self.ports[1])
    }

    /// Configs for every role; P1 reaches P0 at `p0_for_p1` (a proxy) if given, which also
    /// limits P0's queue to one waiting client and sets the short fault-test timeout.
    fn write_configs(&self, p0_for_p1: Option<&str>) {
        let tls = |role: &str| format!("[tls]\ncert = \"certs/{role}.pem\"\nkey = \"certs/{role}.key\"\nca = \"certs/ca.pem\"\n");
        let io = if p0_for_p1.is_some() { IO_TIMEOUT } else { IO_TIMEOUT_RELAXED };
        let t = format!("[timeouts]\nhandshake = 10\nio = {io}\nquery = 120\n");
        let (p0, p1) = (self.p0(), self.p1());
        let files = [
            (
                "p0.toml",
                format!(
                    "listen = \"{p0}\"\nbundle = \"shares/p0\"\n{}{t}{}",
                    tls("p0"),
                    if p0_for_p1.is_some() { "[limits]\nmax_queue = 1\n" } else { "" }
                ),
            ),
            (
                "p1.toml",
                format!("listen = \"{p1}\"\nbundle = \"shares/p1\"\n{}[peers]\np0 = \"{}\"\n{t}", tls("p1"), p0_for_p1.unwrap_or(&p0)),
            ),
            ("dealer.toml", format!("{}[peers]\np0 = \"{p0}\"\np1 = \"{p1}\"\n{t}", tls("dealer"))),
            ("client.toml", format!("bundle = \"shares/public\"\n{}[peers]\np0 = \"{p0}\"\np1 = \"{p1}\"\n{t}", tls("client"))),
        ];
        for (f, c) in files {
            std::fs::write(self.path().join(f), c).unwrap();
        }
    }

    fn start(&mut self, role: &'static str) {
        self.starts += 1;
        let log = self.path().join(format!("{role}-{}.log", self.starts));
        let p = spawn(&["party", "--role", role, "--config", &format!("{role}.toml")], self.path(), &log);
        self.procs.push((role, p));
    }

    fn start_all(&mut self) {
        for r in ["p0", "p1", "dealer"] {
            self.start(r);
        }
    }

    fn kill(&mut self, role: &str) {
        self.procs.retain(|(r, _)| *r != role);
    }

    /// Everything `role` logged (all its runs, in start order).
    fn log(&self, role: &str) -> String {
        let mut s = String::new();
        for i in 1..=self.starts {
            if let Ok(t) = std::fs::read_to_string(self.path().join(format!("{role}-{i}.log"))) {
                s += &t;
            }
        }
        s
    }

    fn wait_log(&self, role: &str, needle: &str, count: usize, secs: f64) {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        while self.log(role).matches(needle).count() < count {
            assert!(Instant::now() < deadline, "{role} never logged '{needle}' ×{count}:\n{}", self.log(role));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn query(&self, args: &[&str]) -> Output {
        let mut a = vec!["query", "--config", "client.toml"];
        a.extend_from_slice(args);
        run(&a, self.path(), 180.0)
    }

    fn logs(&self) -> String {
        ["p0", "p1", "dealer"].iter().map(|r| format!("--- {r}:\n{}", self.log(r))).collect()
    }
}

/// A random-weight model directory (2 layers, MiniLM's tokenizer and vocabulary).
fn tiny_model(act: &str, softmax: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BertConfig::tiny(2, 64, 2, 30522);
    cfg.hidden_act = act.parse().unwrap();
    cfg.softmax_act = softmax.parse().unwrap();
    cfg.set_labels(&["negative".to_string(), "positive".to_string()], false);
    let md = ModelDir::random(cfg, 2, 11, &candle_core::Device::Cpu).unwrap();
    mpcformer::model::checkpoint::save_model(dir.path(), &md.varmap, &md.config, &common::minilm()).unwrap();
    dir
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn logits_of(q: &serde_json::Value) -> Vec<f64> {
    q["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// Deployed logits of SST-2 dev rows against the in-process executor and the plaintext model.
fn check_against_embedded(model: &Path, dep: &Deployment, limit: usize, max_len: usize, deployed: &[Vec<f64>]) {
    let dev = candle_core::Device::Cpu;
    let md = ModelDir::load(model, None, 0, &dev).unwrap();
    let enc = TextEncoder::load(&dep.path().join("shares/public"), max_len, md.config.vocab_size).unwrap();
    let rows = enc.encode(&load_split(Task::Sst2, &common::glue("SST-2"), "dev", Some(limit)).unwrap()).unwrap();
    let plain = mpcformer::eval::predict(&md.model, &rows, 8, &dev, |_| {}).unwrap();
    let private: Vec<PrivateRow> = rows.iter().map(|e| PrivateRow { ids: e.ids.clone(), type_ids: e.type_ids.clone() }).collect();
    let embedded = run_private(&md, &private, 16, Arc::new(|_| {})).unwrap();
    assert_eq!(deployed.len(), limit);
    for (i, d) in deployed.iter().enumerate() {
        let (e, p) = (&embedded.logits[i], &plain[i].logits);
        for j in 0..d.len() {
            // Two independent runs: each carries its own truncation noise.
            assert!((d[j] - e[j]).abs() < 0.02, "row {i}: deployed {d:?} vs embedded {e:?}");
            assert!((d[j] - p[j] as f64).abs() < 0.05, "row {i}: deployed {d:?} vs plaintext {p:?}");
        }
        if (p[0] - p[1]).abs() > 0.05 {
            let df: Vec<f32> = d.iter().map(|&v| v as f32).collect();
            assert_eq!(mpcformer::eval::argmax(&df), mpcformer::eval::argmax(p), "row {i}: {d:?} vs plaintext {p:?}");
        }
    }
}

#[test]
fn deployed_queries_match_the_embedded_executor() {
    let model = tiny_model("gelu", "softmax");
    let mut dep = Deployment::new(model.path());
    dep.start_all();
    let sst2 = common::glue("SST-2");
    let o = dep.query(&["--task", "sst2", "--data", sst2.to_str().unwrap(), "--limit", "4", "--max-seq-len", "24", "--output", "rows.json"]);
    assert!(o.status.success(), "{}\n{}", text(&o.stderr), dep.logs());
    let j = json(&dep.path().join("rows.json"));
    assert_eq!(j["task"], "sst2");
    assert!(j["metrics"]["accuracy"].is_number());
    let qs = j["queries"].as_array().unwrap();
    let deployed: Vec<Vec<f64>> = qs.iter().map(logits_of).collect();
    check_against_embedded(model.path(), &dep, 4, 24, &deployed);
    // One session served the queries one after another; both parties counted the same rounds.
    for (k, q) in qs.iter().enumerate() {
        assert_eq!(q["p0"]["session_queries"], (k + 1) as u64, "{q}");
        assert_eq!(q["p0"]["rounds"], q["p1"]["rounds"]);
        assert!(q["p0"]["rounds"].as_u64().unwrap() > 100);
        assert_eq!(q["p0"]["seq_len"], q["seq_len"]);
    }

    // A single text, then three clients at once: P0 queues them and serves each in turn.
    let o = dep.query(&["--text", "a gripping and moving film", "--output", "one.json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("label: "), "{}", text(&o.stdout));
    let one = logits_of(&json(&dep.path().join("one.json"))["queries"][0]);
    let clients: Vec<(Proc, PathBuf)> = (0..3)
        .map(|i| {
            let out = format!("c{i}.json");
            let p = spawn(
                &["query", "--config", "client.toml", "--text", "a gripping and moving film", "--output", &out],
                dep.path(),
                &dep.path().join(format!("c{i}.log")),
            );
            (p, dep.path().join(out))
        })
        .collect();
    for (mut p, out) in clients {
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "concurrent query hangs\n{}", dep.logs());
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{}", dep.logs());
        let l = logits_of(&json(&out)["queries"][0]);
        for (a, b) in l.iter().zip(&one) {
            assert!((a - b).abs() < 0.02, "{l:?} vs {one:?}");
        }
    }
    assert_eq!(dep.log("p0").matches(" done: ").count(), 8, "{}", dep.logs());
    assert!(!dep.log("p0").contains("session setup failed"), "{}", dep.logs());
}

#[test]
fn minilm_deployment_agrees_with_plaintext() {
    let model = common::minilm_variant(|c| {
        c["num_labels"] = 2.into();
        c["num_hidden_layers"] = 2.into();
    });
    let mut dep = Deployment::new(model.path());
    dep.start_all();
    let sst2 = common::glue("SST-2");
    let o = dep.query(&["--task", "sst2", "--data", sst2.to_str().unwrap(), "--limit", "2", "--max-seq-len", "16", "--output", "rows.json"]);
    assert!(o.status.success(), "{}\n{}", text(&o.stderr), dep.logs());
    let qs = json(&dep.path().join("rows.json"))["queries"].as_array().unwrap().clone();
    let deployed: Vec<Vec<f64>> = qs.iter().map(logits_of).collect();
    check_against_embedded(model.path(), &dep, 2, 16, &deployed);
}

/// What a [`Proxy`] does once armed and past its byte threshold.
#[derive(Clone, Copy, Debug)]
enum Trip {
    /// Stop forwarding (a stalled link); the connection stays open.
    Hold,
    /// Flip one byte of the stream and carry on (corruption in flight).
    Flip,
    /// Drop the bytes of one read (a lost segment: part of a frame or several) and carry on.
    Drop,
}

#[derive(Default)]
struct ProxyState {
    /// Bytes forwarded client → upstream (P1 → P0), over all connections.
    forwarded: AtomicU64,
    armed: Mutex<Option<(u64, Trip)>>,
    tripped: AtomicBool,
}

/// A TCP proxy between P1 and P0 that can stall or corrupt the P1 → P0 stream on demand.
struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
}

impl Proxy {
    fn start(upstream: String) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let Ok(u) = TcpStream::connect(&upstream) else { continue };
                let (c2, u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
                let st2 = st.clone();
                std::thread::spawn(move || pump(c, u, Some(st2)));
                std::thread::spawn(move || pump(u2, c2, None));
            }
        });
        Proxy { port, state }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Trip after `bytes` more bytes from P1 to P0.
    fn arm(&self, bytes: u64, trip: Trip) {
        self.state.tripped.store(false, Ordering::SeqCst);
        *self.state.armed.lock().unwrap() = Some((self.state.forwarded.load(Ordering::SeqCst) + bytes, trip));
    }

    fn wait_tripped(&self, secs: f64) {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        while !self.state.tripped.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the proxy never tripped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn pump(mut src: TcpStream, mut dst: TcpStream, counted: Option<Arc<ProxyState>>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(st) = &counted {
            let total = st.forwarded.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            let trip = {
                let mut a = st.armed.lock().unwrap();
                match *a {
                    Some((at, t)) if total >= at => {
                        *a = None;
                        Some(t)
                    }
                    _ => None,
                }
            };
            match trip {
                Some(Trip::Hold) => {
                    st.tripped.store(true, Ordering::SeqCst);
                    // Swallow everything until one side goes away.
                    while matches!(src.read(&mut buf), Ok(k) if k > 0) {}
                    break;
                }
                Some(Trip::Flip) => {
                    buf[n / 2] ^= 0x55;
                    st.tripped.store(true, Ordering::SeqCst);
                }
                Some(Trip::Drop) => {
                    st.tripped.store(true, Ordering::SeqCst);
                    continue;
                }
                None => {}
            }
        }
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

const LONG_TEXT: &str = "the film opens slowly , builds a quiet tension through its first hour , and then \
    surprises everyone with a warm , funny and genuinely moving final act that stays with you long after";

/// Deployment with the P1 → P0 link through a proxy, ready (one query answered).
fn proxied() -> (tempfile::TempDir, Deployment, Proxy, Vec<f64>) {
    let model = tiny_model("quad", "2quad");
    let mut dep = Deployment::new(model.path());
    let proxy = Proxy::start(dep.p0());
    dep.write_configs(Some(&proxy.addr()));
    dep.start_all();
    let o = dep.query(&["--text", LONG_TEXT, "--output", "ref.json"]);
    assert!(o.status.success(), "{}\n{}", text(&o.stderr), dep.logs());
    let reference = logits_of(&json(&dep.path().join("ref.json"))["queries"][0]);
    (model, dep, proxy, reference)
}

fn assert_recovers(dep: &Deployment, reference: &[f64]) {
    let o = dep.query(&["--text", LONG_TEXT, "--output", "after.json"]);
    assert!(o.status.success(), "the next query fails: {}\n{}", text(&o.stderr), dep.logs());
    let l = logits_of(&json(&dep.path().join("after.json"))["queries"][0]);
    for (a, b) in l.iter().zip(reference) {
        assert!((a - b).abs() < 0.02, "{l:?} vs {reference:?}");
    }
}

#[test]
fn killed_party_mid_query_is_reported_and_a_restart_serves_the_next_query() {
    let (_model, mut dep, proxy, reference) = proxied();
    proxy.arm(20_000, Trip::Hold);
    let client = spawn(&["query", "--config", "client.toml", "--text", LONG_TEXT], dep.path(), &dep.path().join("killed.log"));
    proxy.wait_tripped(60.0);
    dep.kill("p1");
    let t = Instant::now();
    let mut client = client;
    let status = loop {
        if let Some(s) = client.child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed().as_secs_f64() < IO_TIMEOUT + 10.0, "the client hangs after p1 died\n{}", dep.logs());
        std::thread::sleep(Duration::from_millis(20));
    };
    let waited = t.elapsed().as_secs_f64();
    let err = std::fs::read_to_string(dep.path().join("killed.log")).unwrap();
    eprintln!("client after {waited:.2} s: {err}");
    assert!(!status.success(), "a query whose party died must fail: {err}");
    assert!(err.contains("error: private inference") && !err.contains("label:"), "{err}");
    assert!(err.contains("p0") || err.contains("p1"), "the error names the link: {err}");
    assert!(waited < IO_TIMEOUT + 5.0, "the client learnt of the failure after {waited:.1} s");
    dep.wait_log("p0", "failed (ending the session)", 1, 30.0);
    dep.wait_log("dealer", "ended after", 1, 30.0);
    eprintln!("{}", dep.logs());
    dep.start("p1");
    assert_recovers(&dep, &reference);
    assert_eq!(dep.log("p0").matches("ready").count(), 2, "a second session served the last query\n{}", dep.logs());
}

#[test]
fn corrupted_lossy_and_stalled_links_fail_cleanly_and_the_deployment_recovers() {
    let (_model, dep, proxy, reference) = proxied();
    // A flipped byte inside the TLS stream: P0 rejects the record, the query fails everywhere.
    proxy.arm(20_000, Trip::Flip);
    let o = dep.query(&["--text", LONG_TEXT]);
    assert!(!o.status.success(), "a corrupted link must not produce a result: {}", text(&o.stdout));
    eprintln!("corrupted: {}", text(&o.stderr));
    assert!(text(&o.stdout).is_empty(), "no partial result on stdout: {}", text(&o.stdout));
    dep.wait_log("p0", "failed (ending the session)", 1, 30.0);
    assert_recovers(&dep, &reference);

    // Bytes lost in flight while the stream goes on: the next record does not authenticate.
    proxy.arm(20_000, Trip::Drop);
    let t = Instant::now();
    let o = dep.query(&["--text", LONG_TEXT]);
    let waited = t.elapsed().as_secs_f64();
    assert!(!o.status.success(), "a link that lost bytes must not produce a result: {}", text(&o.stdout));
    assert!(text(&o.stdout).is_empty(), "no partial result on stdout: {}", text(&o.stdout));
    let err = text(&o.stderr);
    eprintln!("dropped after {waited:.2} s: {err}");
    assert!(err.contains("error: private inference") && (err.contains("p0") || err.contains("p1")), "{err}");
    // Detected by TLS's record authentication, not left to the stall timeout.
    assert!(err.contains("TLS from p1") && !err.contains("timed out"), "{err}\n{}", dep.logs());
    assert!(waited < 3.0 * IO_TIMEOUT + 5.0, "loss reported after {waited:.1} s");
    dep.wait_log("p0", "failed (ending the session)", 2, 30.0);
    assert_recovers(&dep, &reference);

    // A link that stops delivering: the waiting side gives up after the io timeout.
    proxy.arm(20_000, Trip::Hold);
    let t = Instant::now();
    let o = dep.query(&["--text", LONG_TEXT]);
    let waited = t.elapsed().as_secs_f64();
    assert!(!o.status.success());
    let err = text(&o.stderr);
    eprintln!("stalled after {waited:.2} s: {err}");
    assert!(err.contains("timed out"), "{err}\n{}", dep.logs());
    assert!(waited < 3.0 * IO_TIMEOUT + 5.0, "stall reported after {waited:.1} s");
    assert_recovers(&dep, &reference);
}

#[test]
fn p0_queues_clients_while_busy_and_refuses_beyond_max_queue() {
    let (_model, dep, proxy, reference) = proxied();
    // Query A stalls inside the protocol (the P1 → P0 stream is held) until the io timeout.
    proxy.arm(20_000, Trip::Hold);
    let mut a = spawn(&["query", "--config", "client.toml", "--text", LONG_TEXT], dep.path(), &dep.path().join("a.log"));
    proxy.wait_tripped(60.0);
    // B waits in P0's queue (max_queue = 1); C finds the queue full.
    let mut b = spawn(
        &["query", "--config", "client.toml", "--text", LONG_TEXT, "--output", "b.json"],
        dep.path(),
        &dep.path().join("b.log"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let c = dep.query(&["--text", LONG_TEXT]);
    assert!(!c.status.success());
    assert!(text(&c.stderr).contains("busy: 1 queries are waiting"), "{}\n{}", text(&c.stderr), dep.logs());
    let wait = |p: &mut Proc| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "a client hangs\n{}", dep.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(!wait(&mut a).success(), "the stalled query fails");
    assert!(wait(&mut b).success(), "the queued query is served by the next session: {}", std::fs::read_to_string(dep.path().join("b.log")).unwrap());
    let l = logits_of(&json(&dep.path().join("b.json"))["queries"][0]);
    for (x, y) in l.iter().zip(&reference) {
        assert!((x - y).abs() < 0.02, "{l:?} vs {reference:?}");
    }
}

#[test]
fn parties_refuse_foreign_certificates_and_wrong_roles() {
    use mpcformer::deploy::wire::{Control, PROTOCOL};
    use mpcformer::mpc::net::{Identity, Link, LinkLimits, Role};
    let model = tiny_model("quad", "2quad");
    let mut dep = Deployment::new(model.path());
    dep.start("p0");
    dep.wait_log("p0", "listening", 1, 30.0);
    let d = dep.path().to_path_buf();
    let certs = d.join("certs");
    let limits = LinkLimits { handshake: Duration::from_secs(5), io: Duration::from_secs(5), max_message: 1 << 20 };

    // A client certificate from another CA (the client itself trusts the deployment's CA).
    let o = run(&["certs", "--out", "other"], &d, 60.0);
    assert!(o.status.success());
    let cfg = std::fs::read_to_string(d.join("client.toml")).unwrap();
    std::fs::write(d.join("foreign.toml"), cfg.replace("certs/client.pem", "other/client.pem").replace("certs/client.key", "other/client.key"))
        .unwrap();
    let o = run(&["query", "--config", "foreign.toml", "--text", "hello"], &d, 60.0);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    dep.wait_log("p0", "refused a connection", 1, 10.0);

    // No TLS at all (garbage on the socket): the handshake fails and P0 closes the connection.
    let mut raw = TcpStream::connect(dep.p0()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    dep.wait_log("p0", "refused a connection", 2, 10.0);

    // P1's certificate asking for a client's query: refused, with the reason sent back.
    let p1 = Identity::load(Role::P1, &certs.join("p1.pem"), &certs.join("p1.key"), &certs.join("ca.pem")).unwrap();
    let link = Link::connect(&dep.p0(), Role::P0, &p1, limits).unwrap();
    link.send_control(&Control::ClientHello { protocol: PROTOCOL, qid: "0".repeat(32), fingerprint: String::new(), type_ids: vec![0] })
        .unwrap();
    let e = link.recv_control::<Control>(Some(Duration::from_secs(5)), "an answer").unwrap_err();
    assert!(e.to_string().contains("a p1 certificate may not open a client_hello link to p0"), "{e}");
    // The client's certificate posing as P1 on the peer link.
    let client = Identity::load(Role::Client, &certs.join("client.pem"), &certs.join("client.key"), &certs.join("ca.pem")).unwrap();
    let link = Link::connect(&dep.p0(), Role::P0, &client, limits).unwrap();
    link.send_control(&Control::PeerHello { protocol: PROTOCOL, sid: "0".repeat(32) }).unwrap();
    let e = link.recv_control::<Control>(Some(Duration::from_secs(5)), "an answer").unwrap_err();
    assert!(e.to_string().contains("a client certificate may not open a peer_hello link to p0"), "{e}");
    // Expecting P1 where P0 answers: the name check fails in the handshake.
    let e = Link::connect(&dep.p0(), Role::P1, &client, limits).err().expect("p0 is not p1");
    assert!(e.to_string().contains("p1 at"), "{e}");
    // A process started with another role's certificate stops at once.
    let e = Identity::load(Role::Client, &certs.join("p0.pem"), &certs.join("p0.key"), &certs.join("ca.pem")).err().unwrap();
    assert!(e.to_string().contains("for role p0, but this process runs as client"), "{e}");
}

#[test]
fn parties_refuse_wrong_and_corrupted_bundles() {
    let model = tiny_model("quad", "2quad");
    let dep = Deployment::new(model.path());
    let d = dep.path();
    let cfg = std::fs::read_to_string(d.join("p1.toml")).unwrap();
    std::fs::write(d.join("wrong.toml"), cfg.replace("shares/p1", "shares/p0")).unwrap();
    let o = run(&["party", "--role", "p1", "--config", "wrong.toml"], d, 60.0);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("shares/p0/share.kdshare") && err.contains("party 0's share"), "{err}");

    let bad = d.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["config.json", "manifest.json", "share.kdshare"] {
        std::fs::copy(d.join("shares/p1").join(f), bad.join(f)).unwrap();
    }
    let share = bad.join("share.kdshare");
    let mut bytes = std::fs::read(&share).unwrap();
    let k = bytes.len() / 2;
    bytes[k] ^= 0x01;
    std::fs::write(&share, bytes).unwrap();
    std::fs::write(d.join("bad.toml"), cfg.replace("shares/p1", "bad")).unwrap();
    let o = run(&["party", "--role", "p1", "--config", "bad.toml"], d, 60.0);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("bad/share.kdshare") && err.contains("checksum mismatch"), "{err}");

    // Unknown config keys are errors too.
    std::fs::write(d.join("typo.toml"), format!("{cfg}\nlisten_addr = \"x\"\n")).unwrap();
    let o = run(&["party", "--role", "p1", "--config", "typo.toml"], d, 60.0);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("typo.toml") && text(&o.stderr).contains("listen_addr"), "{}", text(&o.stderr));
}

/// Two links over loopback with a fresh CA: simultaneous large messages in both directions
/// (the 2PC exchange pattern), a receive timeout, and a vanished peer.
#[test]
fn tls_links_exchange_simultaneously_and_fail_with_reasons() {
    use mpcformer::mpc::channel::ChannelError;
    use mpcformer::mpc::net::{Identity, Link, LinkLimits, Role};
    let t = tempfile::tempdir().unwrap();
    mpcformer::deploy::certs::make_certs(t.path(), 1).unwrap();
    let id = |r: Role| {
        let c = t.path();
        Arc::new(Identity::load(r, &c.join(format!("{r}.pem")), &c.join(format!("{r}.key")), &c.join("ca.pem")).unwrap())
    };
    let (p0, p1) = (id(Role::P0), id(Role::P1));
    let limits = LinkLimits { handshake: Duration::from_secs(5), io: Duration::from_secs(5), max_message: 64 << 20 };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || Link::accept(l.accept().unwrap().0, &p0, limits).unwrap());
    let a = Link::connect(&addr, Role::P0, &p1, limits).unwrap();
    let b = server.join().unwrap();
    assert_eq!(b.peer(), Role::P1);
    assert_eq!(a.peer(), Role::P0);
    // 40 MB each way at once: both sides send before either receives.
    let big: Vec<u8> = (0..40_000_000u32).map(|i| (i % 251) as u8).collect();
    let (a2, big2) = (a.clone(), big.clone());
    let ta = std::thread::spawn(move || {
        a2.send(&big2).unwrap();
        a2.recv_message(Some(Duration::from_secs(30))).unwrap()
    });
    b.send(&big).unwrap();
    let got_b = b.recv_message(Some(Duration::from_secs(30))).unwrap();
    let got_a = ta.join().unwrap();
    assert!(got_a == big && got_b == big);
    let e = a.recv_message(Some(Duration::from_millis(200))).unwrap_err();
    assert!(matches!(e, ChannelError::Timeout { .. }), "{e}");
    b.abort("test over");
    let e = a.recv_message(Some(Duration::from_secs(5))).unwrap_err();
    assert!(e.to_string().contains("gave up: test over"), "{e}");
    let e = a.recv_message(Some(Duration::from_secs(5))).unwrap_err();
    assert!(e.to_string().contains("test over"), "later receives repeat the reason: {e}");
}
