//! wss:// through rustls: a real TLS client (tokio-tungstenite + rustls) against a certificate
//! made by rcgen, and clear start errors for bad TLS files.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::Connector;

fn client_config(ca_pem: &str) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("pem")).expect("root");
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test(flavor = "multi_thread")]
async fn wss_serves_a_real_tls_client() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("dir");
    let (crt, key) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
    std::fs::write(&crt, cert.cert.pem()).expect("crt");
    std::fs::write(&key, cert.signing_key.serialize_pem()).expect("key");
    let tls = format!(
        "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        crt.display().to_string(),
        key.display().to_string()
    );
    let gw = spawn_gateway(&Setup::new(&format!("{}/whoami", echo_upstream().await)).tail(&tls));

    let mut req = format!("wss://localhost:{}/ws", gw.public.port()).into_client_request().expect("req");
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", token())).expect("hv"));
    let tcp = tokio::net::TcpStream::connect(gw.public).await.expect("tcp");
    let connector = Connector::Rustls(Arc::new(client_config(&cert.cert.pem())));
    let (mut ws, _) =
        tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(connector)).await.expect("wss handshake");
    assert_eq!(recv_json(&mut ws).await["x-wsgate-subject"], "alice");
    let msg = serde_json::json!({"type": "chat.read", "payload": {}});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg);

    // Plain ws:// on the TLS port is refused (no handshake succeeds).
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.public)).await;
    assert!(err.is_err());
}

#[test]
fn a_missing_certificate_fails_at_start_naming_the_key() {
    let setup =
        Setup::new("ws://127.0.0.1:9/").tail("[server.tls]\ncert_file = \"missing.crt\"\nkey_file = \"missing.key\"\n");
    let (_dir, path) = write_config(&setup.toml());
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .env("WSGATE_TEST_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.tls.cert_file"), "{err}");
}
