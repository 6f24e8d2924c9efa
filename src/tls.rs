//! PEM files → rustls `ServerConfig` (TLS 1.2 and 1.3 only, ring provider). Loading only;
//! no policy lives here.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::error::Error;

/// Build the public listener's TLS config.
///
/// # Errors
/// [`Error::Tls`] naming the file and what was wrong (missing, not PEM, key/cert mismatch).
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| Error::Tls(format!("server.tls.cert_file {}: {e}", files.cert_file.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("server.tls.cert_file {}: {e}", files.cert_file.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("server.tls.cert_file {}: no certificate found", files.cert_file.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| Error::Tls(format!("server.tls.key_file {}: {e}", files.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("server.tls: certificate and key do not match or are unusable: {e}")))
}
