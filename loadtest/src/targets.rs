//! The gateway URLs of a run (`--url`, repeatable) and which client goes to which: client `i`
//! uses URL `i mod n`, round robin, as an L4 load balancer in front of a fleet would spread
//! connections. Each URL is checked before the run starts.

use std::sync::atomic::AtomicU64;

use anyhow::Context;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Uri;

/// Checks one `--url`: it parses, its scheme is `ws` (`wss` is refused with the reason: the
/// generator has no TLS), it names a host that is not an IPv6 literal (the generator opens IPv4
/// sockets), its port if any is 1..=65535, and a WebSocket request can be built from it.
pub fn validate(url: &str) -> anyhow::Result<()> {
    let uri: Uri = url.parse().with_context(|| format!("--url {url}: not a URL (expected ws://host:port/path)"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => anyhow::bail!(
            "--url {url}: wss:// targets are not supported; drive the gateway's plain ws:// listener (TLS costs \
             the same on every target and is measured by the TLS tests), or put a local TLS terminator in front"
        ),
        Some(other) => anyhow::bail!("--url {url}: scheme `{other}` is not ws:// (expected ws://host:port/path)"),
        None => anyhow::bail!("--url {url}: no scheme (expected ws://host:port/path)"),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .with_context(|| format!("--url {url}: no host (expected ws://host:port/path)"))?;
    anyhow::ensure!(
        !host.starts_with('['),
        "--url {url}: IPv6 addresses are not supported (the generator opens IPv4 sockets)"
    );
    // `http` takes any digits for a port and reads one past 65535 as none, which would dial 80.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let after_host = authority.rsplit('@').next().unwrap_or("").strip_prefix(host).unwrap_or("");
    if !after_host.is_empty() {
        anyhow::ensure!(
            uri.port_u16().is_some_and(|p| p > 0),
            "--url {url}: port `{}` is not within 1..=65535",
            after_host.trim_start_matches(':')
        );
    }
    url.into_client_request().map_err(|e| anyhow::anyhow!("--url {url}: {e}"))?;
    Ok(())
}

/// The URLs of a run, each checked, with a count of connections opened through each.
pub struct Targets {
    urls: Vec<String>,
    connected: Vec<AtomicU64>,
}

impl Targets {
    pub fn new(urls: &[String]) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "--url: at least one target is required");
        for url in urls {
            validate(url)?;
        }
        Ok(Self { urls: urls.to_vec(), connected: urls.iter().map(|_| AtomicU64::new(0)).collect() })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The index of client `i`'s URL (round robin).
    pub fn index(&self, i: usize) -> usize {
        i % self.urls.len()
    }

    /// Client `i`'s URL.
    pub fn url(&self, i: usize) -> &str {
        &self.urls[self.index(i)]
    }

    /// Connections opened through URL `index` so far.
    pub fn connected(&self, index: usize) -> &AtomicU64 {
        &self.connected[index]
    }

    /// How many of `clients` clients (numbered from 0) each URL gets.
    pub fn clients_per_url(&self, clients: usize) -> Vec<usize> {
        clients_per_url(self.urls.len(), clients)
    }
}

/// How many of `clients` clients, numbered from 0 and assigned round robin, each of `n` URLs
/// gets: the first `clients mod n` URLs one more than the others.
pub fn clients_per_url(n: usize, clients: usize) -> Vec<usize> {
    (0..n).map(|k| clients / n + usize::from(k < clients % n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(urls: &[&str]) -> anyhow::Result<Targets> {
        Targets::new(&urls.iter().map(|u| u.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn one_url_takes_every_client() {
        let t = targets(&["ws://127.0.0.1:8080/ws"]).unwrap();
        assert!((0..100).all(|i| t.url(i) == "ws://127.0.0.1:8080/ws"));
        assert_eq!(t.clients_per_url(100), vec![100]);
    }

    #[test]
    fn clients_go_round_robin() {
        let t = targets(&["ws://a:1/ws", "ws://b:2/ws", "ws://c:3/x"]).unwrap();
        let got: Vec<&str> = (0..7).map(|i| t.url(i)).collect();
        assert_eq!(
            got,
            ["ws://a:1/ws", "ws://b:2/ws", "ws://c:3/x", "ws://a:1/ws", "ws://b:2/ws", "ws://c:3/x", "ws://a:1/ws"]
        );
        assert_eq!(t.index(4), 1);
        // The counts agree with the assignment, for any number of clients.
        for clients in 0..20 {
            let mut counted = vec![0; 3];
            for i in 0..clients {
                counted[t.index(i)] += 1;
            }
            assert_eq!(t.clients_per_url(clients), counted, "{clients} clients");
            assert_eq!(t.clients_per_url(clients).iter().sum::<usize>(), clients);
        }
        assert_eq!(clients_per_url(2, 5), vec![3, 2]);
        assert_eq!(clients_per_url(4, 2), vec![1, 1, 0, 0]);
    }

    #[test]
    fn urls_are_checked() {
        for good in ["ws://127.0.0.1:8080/ws", "ws://localhost/ws?x=1", "ws://gw.example:9000"] {
            validate(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, why) in [
            ("http://127.0.0.1:8080/ws", "scheme `http`"),
            ("127.0.0.1:8080", "expected ws://"),
            ("/ws", "no scheme"),
            ("wss://127.0.0.1:8443/ws", "wss:// targets are not supported"),
            ("ws://", "not a URL"),
            ("ws://127.0.0.1:99999/ws", "port `99999` is not within 1..=65535"),
            ("ws://127.0.0.1:0/ws", "port `0`"),
            ("ws://[::1]:8080/ws", "IPv6"),
            ("ws://exa mple/ws", "not a URL"),
            ("", "not a URL"),
        ] {
            let err = validate(bad).expect_err(bad).to_string();
            assert!(err.starts_with(&format!("--url {bad}:")), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
        // One bad URL among good ones fails the run, naming it.
        let err = targets(&["ws://127.0.0.1:1/ws", "ftp://127.0.0.1:2/ws"]).err().expect("refused").to_string();
        assert!(err.contains("ftp://127.0.0.1:2/ws"), "{err}");
        assert!(targets(&[]).is_err());
    }
}
