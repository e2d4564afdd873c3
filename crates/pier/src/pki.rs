//! The cluster's credentials in the data directory: a CA, a serving certificate signed by it
//! for every name and address clients use, and the admin bearer token. Generated on first
//! start and kept; the serving certificate is re-issued (by the same CA) when the set of
//! names it must carry changes, so kubeconfigs already handed out stay valid.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub struct Pki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
    pub token: String,
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "pier-ca");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

/// Writes `contents` to `path` through a temporary file and a rename, so a crash never leaves
/// a half-written credential behind.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn random_token() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..48).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Loads or creates the credentials under `dir/pki` for a server known by `dns_names` and `ips`.
pub fn load_or_create(dir: &Path, dns_names: &[String], ips: &[IpAddr]) -> Result<Pki> {
    let pki = dir.join("pki");
    fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;
    let ca_key_path = pki.join("ca.key");
    let ca_crt_path = pki.join("ca.crt");
    let (ca_key, ca_pem) = if ca_key_path.exists() && ca_crt_path.exists() {
        let key = KeyPair::from_pem(&fs::read_to_string(&ca_key_path)?).context("reading the CA key")?;
        (key, fs::read_to_string(&ca_crt_path)?)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_atomic(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&ca_crt_path, cert.pem().as_bytes(), 0o644)?;
        (key, cert.pem())
    };

    let mut sans: Vec<String> = dns_names.to_vec();
    sans.extend(ips.iter().map(IpAddr::to_string));
    sans.sort();
    sans.dedup();
    let sans_text = sans.join("\n");
    let srv_key_path = pki.join("server.key");
    let srv_crt_path = pki.join("server.crt");
    let sans_path = pki.join("server.sans");
    let current = fs::read_to_string(&sans_path).unwrap_or_default();
    if current != sans_text || !srv_key_path.exists() || !srv_crt_path.exists() {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(dns_names.to_vec())?;
        p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let issuer = Issuer::new(ca_params()?, &ca_key);
        let cert = p.signed_by(&key, &issuer)?;
        write_atomic(&srv_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&srv_crt_path, cert.pem().as_bytes(), 0o644)?;
        write_atomic(&sans_path, sans_text.as_bytes(), 0o644)?;
    }

    let token_path = dir.join("token");
    let token = match fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = random_token();
            write_atomic(&token_path, t.as_bytes(), 0o600)?;
            t
        }
    };

    let certs = rustls_pemfile::certs(&mut fs::read(&srv_crt_path)?.as_slice()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut fs::read(&srv_key_path)?.as_slice())?
        .context("no private key in server.key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Pki { ca_pem, server_config: Arc::new(config), token })
}

/// The admin kubeconfig: kubectl uses it as is.
pub fn kubeconfig(server_url: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server_url}\n  name: pier\ncontexts:\n- context:\n    cluster: pier\n    namespace: default\n    user: pier-admin\n  name: pier\ncurrent-context: pier\npreferences: {{}}\nusers:\n- name: pier-admin\n  user:\n    token: {token}\n"
    )
}
