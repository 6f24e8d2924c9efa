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
    let (tls, _, _) = tls_table(dir.path(), &cert.cert.pem(), &cert.signing_key.serialize_pem(), "");
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
    let err = fails("serve", &setup);
    assert!(err.contains("server.tls.cert_file"), "{err}");
}

/// Run `wsgate COMMAND --config` on `setup`'s config; it must fail. Returns its stderr.
fn fails(command: &str, setup: &Setup) -> String {
    let (_dir, path) = write_config(&setup.toml());
    let out = Command::new(bin())
        .args([command, "--config"])
        .arg(&path)
        .env("WSGATE_TEST_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Write `cert` (PEM cert, PEM key) into `dir`; returns the `[server.tls]` table naming the
/// files and their paths.
fn tls_table(
    dir: &std::path::Path,
    cert: &str,
    key: &str,
    extra: &str,
) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let (crt, keyf) = (dir.join("gw.crt"), dir.join("gw.key"));
    std::fs::write(&crt, cert).expect("crt");
    std::fs::write(&keyf, key).expect("key");
    let table = format!(
        "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n{extra}\n",
        crt.display().to_string(),
        keyf.display().to_string()
    );
    (table, crt, keyf)
}

/// A self-signed certificate for localhost and 127.0.0.1: (cert PEM, key PEM, cert DER).
fn make_cert() -> (String, String, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("cert");
    (c.cert.pem(), c.signing_key.serialize_pem(), c.cert.der().to_vec())
}

/// A client trusting every certificate in `pems`.
fn trusting(pems: &[&str]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem")).expect("root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Open a wss:// connection trusting every certificate in `pems`, with a fresh client config
/// (no session resumption: the gateway must show its certificate); returns it with the DER of
/// the certificate the gateway showed.
async fn wss(gw: &Gateway, pems: &[&str]) -> (Ws, Vec<u8>) {
    let client = trusting(pems);
    let mut req = format!("wss://localhost:{}/ws", gw.public.port()).into_client_request().expect("req");
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", token())).expect("hv"));
    let tcp = tokio::net::TcpStream::connect(gw.public).await.expect("tcp");
    let (ws, _) = tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(Connector::Rustls(client)))
        .await
        .expect("wss handshake");
    let der = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Rustls(tls) => {
            tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).expect("peer cert")
        }
        _ => panic!("not TLS"),
    };
    (ws, der)
}

async fn exchange(ws: &mut Ws, text: &str) {
    let msg = serde_json::json!({"type": "chat.send", "payload": {"text": text}});
    send_json(ws, &msg).await;
    assert_eq!(recv_json(ws).await, msg);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_certificate_is_reloaded_while_open_connections_keep_exchanging() {
    let (a, b, c) = (make_cert(), make_cert(), make_cert());
    let dir = tempfile::tempdir().expect("dir");
    let (tls, crt, key) = tls_table(dir.path(), &a.0, &a.1, "reload_check_seconds = 1");
    let install = |pair: &(String, String, Vec<u8>)| {
        std::fs::write(&crt, &pair.0).expect("crt");
        std::fs::write(&key, &pair.1).expect("key");
    };
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).tail(&tls));
    let client: &[&str] = &[&a.0, &b.0, &c.0];
    let (mut open, seen) = wss(&gw, client).await;
    assert_eq!(seen, a.2, "starts with certificate A");
    exchange(&mut open, "on A").await;

    // SIGHUP: B for new handshakes, the open connection stays up.
    install(&b);
    gw.signal("HUP");
    wait_for_log(&gw, "\"event\":\"config_reloaded\"", 1).await;
    let (mut second, seen) = wss(&gw, client).await;
    assert_eq!(seen, b.2, "a new handshake gets certificate B");
    exchange(&mut open, "still on A").await;
    exchange(&mut second, "on B").await;

    // No signal: the timed check notices changed files.
    install(&c);
    wait_for_log(&gw, "\"event\":\"certificate_reloaded\"", 1).await;
    let (mut third, seen) = wss(&gw, client).await;
    assert_eq!(seen, c.2, "the file check swapped in certificate C");
    exchange(&mut third, "on C").await;

    // A key that does not match: refused, C stays in force.
    std::fs::write(&key, &a.1).expect("mismatched key");
    gw.signal("HUP");
    wait_for_log(&gw, "\"event\":\"config_reload_failed\"", 1).await;
    let (_, seen) = wss(&gw, client).await;
    assert_eq!(seen, c.2, "a bad pair never replaces a good one");
    exchange(&mut open, "A survived three reloads").await;
}

/// `openssl s_client` offering exactly `version` (SECLEVEL=0, so the client does offer the old
/// versions): "connected", "refused by the server" (an alert from it), or "other".
fn openssl_outcome(port: u16, version: &str) -> &'static str {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), version, "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client (install the openssl package)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("Cipher is ") && !text.contains("Cipher is (NONE)") {
        "connected"
    } else if text.contains("SSL alert number") {
        // An alert from the server (rustls answers an old version with handshake_failure);
        // a refusal by the client itself would carry no alert number.
        "refused by the server"
    } else {
        "other"
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tls_1_2_and_1_3_are_spoken() {
    let (cert, key, _) = make_cert();
    let dir = tempfile::tempdir().expect("dir");
    let (tls, _, _) = tls_table(dir.path(), &cert, &key, "");
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).tail(&tls));
    let port = gw.public.port();
    let results = tokio::task::spawn_blocking(move || {
        ["-tls1", "-tls1_1", "-tls1_2", "-tls1_3"].map(|v| (v, openssl_outcome(port, v)))
    })
    .await
    .expect("openssl");
    let refused = "refused by the server";
    assert_eq!(results, [("-tls1", refused), ("-tls1_1", refused), ("-tls1_2", "connected"), ("-tls1_3", "connected")]);
}

/// A wss:// echo upstream with `cert`; returns its port.
async fn tls_echo_upstream(cert: &(String, String, Vec<u8>)) -> u16 {
    use futures_util::{SinkExt, StreamExt};
    use rustls::pki_types::pem::PemObject;
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.0.as_bytes()).expect("cert")];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else { return };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn wss_upstreams_are_verified_against_the_configured_ca() {
    let upstream_cert = make_cert();
    let port = tls_echo_upstream(&upstream_cert).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca, &upstream_cert.0).expect("ca");
    let trusted = Setup::new(&format!("wss://127.0.0.1:{port}/"))
        .route(&format!("upstream_ca_file = {:?}", ca.display().to_string()));
    let gw = spawn_gateway(&trusted);
    let mut ws = gw.connect().await;
    exchange(&mut ws, "through a verified wss:// upstream").await;

    // The same upstream checked against the system roots: its self-signed certificate fails
    // verification, so the client gets 502 and never a 101.
    let untrusted = spawn_gateway(&Setup::new(&format!("wss://127.0.0.1:{port}/")));
    let err = untrusted.connect_with("/ws", Some(ORIGIN), Some(&token()), &[]).await.expect_err("unverified upstream");
    assert_eq!(status(&err), 502);
    assert!(untrusted.log().contains("upstream_failed"), "{}", untrusted.log());
}

#[test]
fn an_upstream_ca_file_on_a_plain_upstream_is_a_config_error() {
    let setup = Setup::new("ws://127.0.0.1:9/").route("upstream_ca_file = \"ca.pem\"");
    let err = fails("check-config", &setup);
    assert!(err.contains("routes[0].upstream_ca_file") && err.contains("wss://"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_header_precedes_the_tls_handshake() {
    use tokio::io::AsyncWriteExt;
    let cert = make_cert();
    let dir = tempfile::tempdir().expect("dir");
    let (tls, _, _) = tls_table(dir.path(), &cert.0, &cert.1, "");
    let setup = Setup::new(&format!("{}/whoami", echo_upstream().await))
        .server("trusted_proxies = [\"127.0.0.0/8\"]\nproxy_protocol = true")
        .tail(&tls);
    let gw = spawn_gateway(&setup);
    let mut tcp = tokio::net::TcpStream::connect(gw.public).await.expect("tcp");
    tcp.write_all(b"PROXY TCP6 2001:db8::5 ::1 4321 443\r\n").await.expect("proxy header");
    let mut req = format!("wss://localhost:{}/ws", gw.public.port()).into_client_request().expect("req");
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", token())).expect("hv"));
    let (mut ws, _) =
        tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(Connector::Rustls(trusting(&[&cert.0]))))
            .await
            .expect("wss after a PROXY header");
    assert_eq!(recv_json(&mut ws).await["x-wsgate-client-ip"], "2001:db8::5");
}

#[test]
fn a_key_that_does_not_match_the_certificate_fails_at_start() {
    let (cert, _, _) = make_cert();
    let (_, other_key, _) = make_cert();
    let dir = tempfile::tempdir().expect("dir");
    let (tls, _, _) = tls_table(dir.path(), &cert, &other_key, "");
    let err = fails("serve", &Setup::new("ws://127.0.0.1:9/").tail(&tls));
    assert!(err.contains("server.tls") && err.contains("do not match"), "{err}");
}
