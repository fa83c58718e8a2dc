//! Share bundles: the model owner's output of `kd share`, one directory per recipient.
//!
//! ```text
//! OUT/public/  config.json  manifest.json  tokenizer files      (the client; public)
//! OUT/p0/      config.json  manifest.json  share.kdshare        (P0 only)
//! OUT/p1/      config.json  manifest.json  share.kdshare        (P1 only)
//! ```
//!
//! `manifest.json` names the model by a **fingerprint**: SHA-256 over a random model id drawn at
//! share time and the SHA-256 of `config.json`. It identifies one sharing of one model (two
//! sharings of the same weights get different ids, so shares of different sharings are never
//! mixed) and says nothing about the weights.
//!
//! A share file (`share.kdshare`) is one party's additive shares (`mpc::bert::share_weights`):
//!
//! ```text
//! magic "KDSHARE\0" (8) ‖ format version u32 LE ‖ party u8 ‖ header length u32 LE ‖
//! SHA-256(header) (32) ‖ header (JSON: fingerprint, frac bits, tensor names/shapes,
//! payload length, SHA-256(payload)) ‖ payload (every tensor's u64 words, LE, header order)
//! ```
//!
//! Loading checks, in order: magic, version, party, header checksum, model fingerprint
//! against the manifest, config checksum against the manifest, frac bits, payload length and
//! checksum. Each failure is a [`BundleError`] naming the file.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::BertConfig;
use crate::mpc::ring::RingTensor;

pub const MAGIC: &[u8; 8] = b"KDSHARE\0";
pub const FORMAT_VERSION: u32 = 1;
pub const SHARE_FILE: &str = "share.kdshare";
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a kd share file (bad magic bytes)")]
    BadMagic { path: PathBuf },
    #[error("{path}: share format version {got}, this kd reads version {want}")]
    Version { path: PathBuf, got: u32, want: u32 },
    #[error("{path}: holds party {got}'s share, but this process is party {want}")]
    WrongParty { path: PathBuf, got: u8, want: u8 },
    #[error("{path}: share of model {got}, but the manifest describes model {want}")]
    WrongModel { path: PathBuf, got: String, want: String },
    #[error("{path}: {what} checksum mismatch: the file is corrupted")]
    Corrupt { path: PathBuf, what: &'static str },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io { path: path.to_path_buf(), source }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The model identity every bundle of one sharing carries.
pub fn fingerprint(model_id: &str, config_sha256: &str) -> String {
    hex(&sha256(format!("kd-share-v1\0{model_id}\0{config_sha256}").as_bytes()))
}

/// `manifest.json`: public facts about a sharing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    /// Random id of this sharing (hex, 128 bits).
    pub model_id: String,
    pub config_sha256: String,
    pub fingerprint: String,
    pub frac_bits: u32,
    pub num_labels: usize,
    /// Where the weights came from (a directory, or a random preset and its seed).
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorEntry {
    name: String,
    shape: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareHeader {
    party: u8,
    fingerprint: String,
    frac_bits: u32,
    tensors: Vec<TensorEntry>,
    payload_bytes: u64,
    payload_sha256: String,
}

fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>) -> Result<(), BundleError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    write(&mut w).and_then(|_| w.flush()).map_err(io_err(&tmp))?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Write one party's share file.
fn write_share(path: &Path, party: u8, fingerprint: &str, frac: u32, shares: &HashMap<String, RingTensor>) -> Result<(), BundleError> {
    let mut names: Vec<&String> = shares.keys().collect();
    names.sort();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut payload_bytes = 0u64;
    for n in &names {
        let bytes = crate::mpc::channel::to_bytes(&shares[*n].data);
        ctx.update(&bytes);
        payload_bytes += bytes.len() as u64;
    }
    let header = ShareHeader {
        party,
        fingerprint: fingerprint.to_string(),
        frac_bits: frac,
        tensors: names.iter().map(|n| TensorEntry { name: (*n).clone(), shape: shares[*n].shape.clone() }).collect(),
        payload_bytes,
        payload_sha256: hex(ctx.finish().as_ref()),
    };
    let hjson = serde_json::to_vec(&header).expect("header serialises");
    write_atomic(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&FORMAT_VERSION.to_le_bytes())?;
        w.write_all(&[party])?;
        w.write_all(&(hjson.len() as u32).to_le_bytes())?;
        w.write_all(&sha256(&hjson))?;
        w.write_all(&hjson)?;
        for n in &names {
            w.write_all(&crate::mpc::channel::to_bytes(&shares[*n].data))?;
        }
        Ok(())
    })
}

/// What `kd share` produced.
#[derive(Debug, Clone)]
pub struct ShareSummary {
    pub manifest: Manifest,
    pub tensors: usize,
    pub parameters: usize,
    pub share_bytes: u64,
}

/// Split a model into the three bundle directories under `out` (replaced if it exists).
/// `tokenizer_src` holds the tokenizer files for the client (none: ids-only queries).
pub fn write_bundles(
    out: &Path,
    named: &[(String, Vec<usize>, Vec<f32>)],
    cfg: &BertConfig,
    num_labels: usize,
    tokenizer_src: Option<&Path>,
    frac: u32,
    source: &str,
) -> Result<ShareSummary, BundleError> {
    if !(8..=20).contains(&frac) {
        return Err(BundleError::Invalid { path: out.to_path_buf(), msg: format!("frac bits {frac} outside 8..=20") });
    }
    let config_json = cfg.to_json_pretty();
    let config_sha256 = hex(&sha256(config_json.as_bytes()));
    let mut id = [0u8; 16];
    id.copy_from_slice(&crate::mpc::prg::Seed::random().0);
    let model_id = hex(&id);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        fingerprint: fingerprint(&model_id, &config_sha256),
        model_id,
        config_sha256,
        frac_bits: frac,
        num_labels,
        source: source.to_string(),
    };
    let shares = crate::mpc::bert::share_weights(named, cfg, frac);
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("shares");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    let manifest_json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    let mut share_bytes = 0;
    for dir in ["public", "p0", "p1"] {
        let d = tmp.join(dir);
        std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        std::fs::write(d.join("config.json"), &config_json).map_err(io_err(&d))?;
        std::fs::write(d.join(MANIFEST_FILE), &manifest_json).map_err(io_err(&d))?;
    }
    for (party, s) in shares.iter().enumerate() {
        let p = tmp.join(format!("p{party}")).join(SHARE_FILE);
        write_share(&p, party as u8, &manifest.fingerprint, frac, s)?;
        share_bytes += std::fs::metadata(&p).map_err(io_err(&p))?.len();
    }
    if let Some(src) = tokenizer_src {
        for f in crate::model::checkpoint::TOKENIZER_FILES {
            let from = src.join(f);
            if from.exists() {
                std::fs::copy(&from, tmp.join("public").join(f)).map_err(io_err(&from))?;
            }
        }
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io_err(out))?;
    }
    std::fs::rename(&tmp, out).map_err(io_err(out))?;
    Ok(ShareSummary {
        manifest,
        tensors: named.len(),
        parameters: named.iter().map(|(_, _, v)| v.len()).sum(),
        share_bytes,
    })
}

/// The public part of a bundle directory: config and manifest, checked against each other.
#[derive(Debug, Clone)]
pub struct PublicModel {
    pub dir: PathBuf,
    pub config: BertConfig,
    pub manifest: Manifest,
}

impl PublicModel {
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let mpath = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&mpath).map_err(io_err(&mpath))?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| BundleError::Invalid { path: mpath.clone(), msg: e.to_string() })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(BundleError::Version { path: mpath, got: manifest.format_version, want: FORMAT_VERSION });
        }
        if manifest.fingerprint != fingerprint(&manifest.model_id, &manifest.config_sha256) {
            return Err(BundleError::Corrupt { path: mpath, what: "fingerprint" });
        }
        let cpath = dir.join("config.json");
        let bytes = std::fs::read(&cpath).map_err(io_err(&cpath))?;
        if hex(&sha256(&bytes)) != manifest.config_sha256 {
            return Err(BundleError::Corrupt { path: cpath, what: "config (against the manifest)" });
        }
        let config: BertConfig = serde_json::from_slice(&bytes)
            .map_err(|e| BundleError::Invalid { path: cpath.clone(), msg: e.to_string() })?;
        config.validate().map_err(|msg| BundleError::Invalid { path: cpath, msg })?;
        Ok(Self { dir: dir.to_path_buf(), config, manifest })
    }
}

/// One party's loaded bundle.
pub struct PartyBundle {
    pub public: PublicModel,
    pub party: u8,
    /// Weight shares by HF name (never printed).
    pub shares: HashMap<String, RingTensor>,
}

impl std::fmt::Debug for PartyBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartyBundle{{party: {}, tensors: {}, ..}}", self.party, self.shares.len())
    }
}

fn read_exact(r: &mut impl Read, n: usize, path: &Path) -> Result<Vec<u8>, BundleError> {
    let mut v = vec![0u8; n];
    r.read_exact(&mut v).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => BundleError::Invalid { path: path.to_path_buf(), msg: "file is truncated".into() },
        _ => BundleError::Io { path: path.to_path_buf(), source: e },
    })?;
    Ok(v)
}

impl PartyBundle {
    /// Load `dir/share.kdshare` for `party`, checked against `dir/manifest.json`.
    pub fn load(dir: &Path, party: u8) -> Result<Self, BundleError> {
        let public = PublicModel::load(dir)?;
        let path = dir.join(SHARE_FILE);
        let f = std::fs::File::open(&path).map_err(io_err(&path))?;
        let mut r = BufReader::with_capacity(1 << 20, f);
        let prefix = read_exact(&mut r, 8 + 4 + 1 + 4 + 32, &path)?;
        if &prefix[..8] != MAGIC {
            return Err(BundleError::BadMagic { path });
        }
        let version = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(BundleError::Version { path, got: version, want: FORMAT_VERSION });
        }
        let got_party = prefix[12];
        if got_party != party {
            return Err(BundleError::WrongParty { path, got: got_party, want: party });
        }
        let hlen = u32::from_le_bytes(prefix[13..17].try_into().expect("4 bytes")) as usize;
        if hlen > 64 << 20 {
            return Err(BundleError::Invalid { path, msg: format!("header length {hlen} is implausible") });
        }
        let hjson = read_exact(&mut r, hlen, &path)?;
        if sha256(&hjson)[..] != prefix[17..49] {
            return Err(BundleError::Corrupt { path, what: "header" });
        }
        let header: ShareHeader =
            serde_json::from_slice(&hjson).map_err(|e| BundleError::Invalid { path: path.clone(), msg: format!("header: {e}") })?;
        if header.party != party {
            return Err(BundleError::WrongParty { path, got: header.party, want: party });
        }
        if header.fingerprint != public.manifest.fingerprint {
            return Err(BundleError::WrongModel { path, got: header.fingerprint, want: public.manifest.fingerprint });
        }
        if header.frac_bits != public.manifest.frac_bits {
            return Err(BundleError::Invalid {
                path,
                msg: format!("frac bits {} disagree with the manifest's {}", header.frac_bits, public.manifest.frac_bits),
            });
        }
        let words: u64 = header.tensors.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum();
        if words * 8 != header.payload_bytes {
            return Err(BundleError::Invalid { path, msg: "tensor shapes disagree with the payload length".into() });
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut shares = HashMap::with_capacity(header.tensors.len());
        for t in &header.tensors {
            let n: usize = t.shape.iter().product();
            let bytes = read_exact(&mut r, n * 8, &path)?;
            ctx.update(&bytes);
            let data = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
            shares.insert(t.name.clone(), RingTensor::new(&t.shape, data));
        }
        if hex(ctx.finish().as_ref()) != header.payload_sha256 {
            return Err(BundleError::Corrupt { path, what: "payload" });
        }
        let mut extra = [0u8; 1];
        if r.read(&mut extra).map_err(io_err(&path))? != 0 {
            return Err(BundleError::Invalid { path, msg: "trailing bytes after the payload".into() });
        }
        Ok(Self { public, party, shares })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

    fn tiny() -> (Named, BertConfig) {
        let cfg = BertConfig::tiny(1, 8, 2, 16);
        let named = vec![
            ("bert.embeddings.word_embeddings.weight".to_string(), vec![16, 8], (0..128).map(|i| i as f32 / 100.0).collect()),
            ("classifier.bias".to_string(), vec![2], vec![0.5, -0.5]),
        ];
        (named, cfg)
    }

    #[test]
    fn bundles_roundtrip_and_reconstruct() {
        let t = tempfile::tempdir().unwrap();
        let (named, cfg) = tiny();
        let out = t.path().join("b");
        let s = write_bundles(&out, &named, &cfg, 2, None, 12, "test").unwrap();
        assert_eq!(s.tensors, 2);
        let b0 = PartyBundle::load(&out.join("p0"), 0).unwrap();
        let b1 = PartyBundle::load(&out.join("p1"), 1).unwrap();
        let sum = b0.shares["classifier.bias"].add(&b1.shares["classifier.bias"]);
        let dec: Vec<f64> = sum.data.iter().map(|&v| crate::mpc::fixed::decode(v, 12)).collect();
        assert_eq!(dec, vec![0.5, -0.5]);
        assert!(!format!("{b0:?}").contains(&b0.shares["classifier.bias"].data[0].to_string()));
        let p = PublicModel::load(&out.join("public")).unwrap();
        assert_eq!(p.manifest, b0.public.manifest);
    }

    #[test]
    fn wrong_party_model_version_and_corruption_are_named() {
        let t = tempfile::tempdir().unwrap();
        let (named, cfg) = tiny();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        write_bundles(&a, &named, &cfg, 2, None, 12, "test").unwrap();
        write_bundles(&b, &named, &cfg, 2, None, 12, "test").unwrap();
        let e = PartyBundle::load(&a.join("p0"), 1).unwrap_err();
        assert!(matches!(e, BundleError::WrongParty { got: 0, want: 1, .. }), "{e}");
        assert!(e.to_string().contains("share.kdshare"), "{e}");
        // Same weights, another sharing: the fingerprints differ.
        std::fs::copy(b.join("p0").join(SHARE_FILE), a.join("p0").join(SHARE_FILE)).unwrap();
        assert!(matches!(PartyBundle::load(&a.join("p0"), 0).unwrap_err(), BundleError::WrongModel { .. }));
        let path = b.join("p1").join(SHARE_FILE);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(PartyBundle::load(&b.join("p1"), 1).unwrap_err(), BundleError::Corrupt { what: "payload", .. }));
        let mut bad = good.clone();
        bad[60] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(PartyBundle::load(&b.join("p1"), 1).unwrap_err(), BundleError::Corrupt { what: "header", .. }));
        let mut bad = good.clone();
        bad[8] = 9;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(PartyBundle::load(&b.join("p1"), 1).unwrap_err(), BundleError::Version { got: 9, .. }));
        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        assert!(matches!(PartyBundle::load(&b.join("p1"), 1).unwrap_err(), BundleError::Invalid { .. }));
        std::fs::write(&path, b"not a share").unwrap();
        assert!(matches!(PartyBundle::load(&b.join("p1"), 1).unwrap_err(), BundleError::Invalid { .. } | BundleError::BadMagic { .. }));
        std::fs::write(&path, &good).unwrap();
        PartyBundle::load(&b.join("p1"), 1).unwrap();
        // A config edited after sharing no longer matches the manifest.
        let c = b.join("p1").join("config.json");
        let text = std::fs::read_to_string(&c).unwrap().replace("\"hidden_size\": 8", "\"hidden_size\": 16");
        std::fs::write(&c, text).unwrap();
        assert!(matches!(PartyBundle::load(&b.join("p1"), 1).unwrap_err(), BundleError::Corrupt { .. }));
    }
}
