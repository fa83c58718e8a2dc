//! Hub ids: `kd eval --model org/name` fetches the checkpoint through hf-hub. No hub is
//! reachable here, so a minimal HF-compatible file server on loopback plays the hub
//! (`HF_ENDPOINT`), serving a small random-weight model written by the crate itself.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use mpcformer::data::Task;
use mpcformer::model::checkpoint::save_model;
use mpcformer::model::{BertConfig, ModelDir};

/// Serve `/{repo}/resolve/main/{file}` from `root` with the headers hf-hub reads
/// (etag, x-repo-commit, content-range), honouring `Range: bytes=a-b`. Returns the base URL.
fn serve(root: PathBuf, repo: &'static str, log: Arc<Mutex<Vec<String>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap();
                    range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().ok()));
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(path.clone());
            let prefix = format!("/{repo}/resolve/main/");
            let body = path.strip_prefix(&prefix).and_then(|f| std::fs::read(root.join(f)).ok());
            let resp = match body {
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                Some(bytes) => {
                    let n = bytes.len();
                    let (a, b) = match range {
                        Some((a, b)) => (a, b.unwrap_or(n - 1).min(n - 1)),
                        None => (0, n - 1),
                    };
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{n}\r\n\
                         ETag: \"{n:x}\"\r\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\nConnection: close\r\n\r\n",
                        b + 1 - a
                    )
                    .into_bytes();
                    r.extend_from_slice(&bytes[a..=b]);
                    r
                }
            };
            let _ = stream.write_all(&resp);
        }
    });
    format!("http://{addr}")
}

#[test]
fn eval_fetches_a_hub_id_through_a_custom_endpoint() {
    let repo_dir = tempfile::tempdir().unwrap();
    let mut cfg = BertConfig::tiny(2, 32, 4, 30522);
    cfg.set_labels(&Task::Sst2.label_names(), false);
    let md = ModelDir::random(cfg.clone(), 2, 3, &Device::Cpu).unwrap();
    save_model(&repo_dir.path().join("m"), &md.varmap, &cfg, &common::minilm()).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let url = serve(repo_dir.path().join("m"), "org/tiny-bert", log.clone());
    let home = tempfile::tempdir().unwrap();
    let sst2 = common::glue("SST-2");
    let kd = |model: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kd"))
            .args(["eval", "--model", model, "--task", "sst2", "--data", sst2.to_str().unwrap(), "--limit", "8", "--no-results"])
            .env("HF_ENDPOINT", &url)
            .env("HF_HOME", home.path())
            .env_remove("HF_HUB_OFFLINE")
            .output()
            .unwrap()
    };
    let o = kd("org/tiny-bert");
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}");
    assert!(out.contains("\"examples\": 8"), "{out}");
    let paths = log.lock().unwrap().clone();
    assert!(paths.iter().any(|p| p.ends_with("/model.safetensors")), "{paths:?}");
    // A repository the endpoint does not have: a clear error naming the id and the file.
    let o = kd("org/missing");
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success());
    assert!(out.contains("org/missing") && out.contains("config.json"), "{out}");
}
