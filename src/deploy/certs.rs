//! `kd certs`: a throw-away certificate authority and one certificate per role, for tests and
//! trial deployments. Each role certificate carries the role as its only DNS SAN (and CN),
//! which is what the links check (`mpc::net::role_of`). A real deployment would use its own PKI
//! with the same naming; the CA key written here should not leave the machine that made it.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

use crate::mpc::net::Role;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating certificates: {0}")]
    Gen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    let err = |source| CertError::Io { path: path.to_path_buf(), source };
    std::fs::write(path, text).map_err(err)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// Write `ca.pem`, `ca.key` and `<role>.pem`/`<role>.key` for every role into `out`; returns
/// the files written.
pub fn make_certs(out: &Path, days: u32) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(out).map_err(|source| CertError::Io { path: out.to_path_buf(), source })?;
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "kd test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(days as i64);
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut files = Vec::new();
    let mut put = |name: &str, text: &str, secret: bool| -> Result<(), CertError> {
        let p = out.join(name);
        write(&p, text, secret)?;
        files.push(p);
        Ok(())
    };
    put("ca.pem", &ca_cert.pem(), false)?;
    put("ca.key", &ca_key.serialize_pem(), true)?;
    for role in Role::ALL {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![role.name().to_string()])?;
        p.distinguished_name.push(DnType::CommonName, role.name());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every process is a TLS server on some links and a client on others.
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(days as i64);
        let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
        put(&format!("{}.pem", role.name()), &cert.pem(), false)?;
        put(&format!("{}.key", role.name()), &key.serialize_pem(), true)?;
    }
    Ok(files)
}
