//! TLS material: PEM files → a rustls `ServerConfig` (TLS 1.2 and 1.3 only, aws-lc provider)
//! whose certificate can be swapped while the listener runs ([`ReloadableCert`]), and the
//! client config for `wss://` upstreams. Loading only; no policy lives here.
//!
//! Reload: the server config resolves its certificate through [`ReloadableCert`] on every
//! handshake, so a swap applies to the next TLS handshake and never touches an established
//! connection. A new pair is only swapped in after it loaded and the key matched the
//! certificate; otherwise the old pair stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why TLS material could not be loaded or a TLS config could not be built: the config key, the
/// file and what was wrong, in one line (`tls: server.tls.cert_file /etc/x.crt: No such file`).
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{what} {}: no certificate found", path.display())));
    }
    Ok(certs)
}

/// The listener's certificate chain and private key (`server.tls.cert_file`, `key_file`).
#[derive(Debug, Clone)]
struct CertFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// Load the certificate chain of `cert_file` and the key of `key_file`, checking that they
/// belong together.
///
/// # Errors
/// [`TlsError`] naming the file and what was wrong (missing, not PEM, key/cert mismatch).
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert_file, "server.tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| TlsError(format!("server.tls.key_file {}: {e}", key_file.display())))?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| TlsError(format!("server.tls: certificate and key do not match or are unusable: {e}")))
}

/// Modification times of the cert and key files (what the timed check compares).
fn stamp(files: &CertFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert_file)?, m(&files.key_file)?))
}

/// The listener's certificate, swappable at run time.
#[derive(Debug)]
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
    /// The files and their modification times when last loaded.
    source: Mutex<(CertFiles, Option<(SystemTime, SystemTime)>)>,
}

// === impl ReloadableCert ===

impl ReloadableCert {
    /// Load `cert_file` and `key_file` for the first time.
    ///
    /// # Errors
    /// As [`load_certified_key`].
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let key = load_certified_key(cert_file, key_file)?;
        let files = CertFiles { cert_file: cert_file.to_path_buf(), key_file: key_file.to_path_buf() };
        let stamp = stamp(&files);
        Ok(Arc::new(Self { current: ArcSwap::from_pointee(key), source: Mutex::new((files, stamp)) }))
    }

    /// Load `cert_file` and `key_file` (possibly new paths after a config reload) and swap
    /// them in.
    ///
    /// # Errors
    /// As [`load_certified_key`]; the old pair stays in force.
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> Result<(), TlsError> {
        let key = load_certified_key(cert_file, key_file)?;
        let files = CertFiles { cert_file: cert_file.to_path_buf(), key_file: key_file.to_path_buf() };
        self.current.store(Arc::new(key));
        let stamp = stamp(&files);
        *self.source.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (files, stamp);
        Ok(())
    }

    /// The timed check: reload when either file's modification time changed since the last
    /// load. `Ok(false)` when nothing changed.
    ///
    /// # Errors
    /// As [`load_certified_key`]; the old pair stays in force (and the check retries the
    /// next time, so a pair written in two steps is picked up once both are in place).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let (files, seen) = self.source.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let now = stamp(&files);
        if now.is_none() || now == seen {
            return Ok(false);
        }
        self.reload(&files.cert_file, &files.key_file).map(|()| true)
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The public listener's TLS config: TLS 1.3 and 1.2 only, no client certificates, the
/// certificate from `cert`, ALPN `http/1.1`.
///
/// # Errors
/// [`TlsError`] when the provider refuses the protocol versions.
pub fn server_config(cert: Arc<ReloadableCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The client config for `wss://` upstreams: the system's roots (`/etc/ssl/certs` and the
/// other places `rustls-native-certs` knows), or only the certificates of `ca_file` when a
/// route names one.
///
/// # Errors
/// [`TlsError`] when `ca_file` is unreadable or holds no certificate, or no root at all
/// could be loaded.
pub fn upstream_client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path, "routes.upstream_ca_file")? {
                roots.add(cert).map_err(|e| TlsError(format!("routes.upstream_ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError("no system root certificates found for wss:// upstreams".into()));
            }
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
