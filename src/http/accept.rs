//! What happens on a public connection before HTTP: the PROXY protocol header (with
//! `server.proxy_protocol`) and the TLS handshake. Produces the connection and the client
//! address the HTTP layer and the handshake policy see as the peer.
//!
//! Trust: a PROXY header is believed only from a peer in `server.trusted_proxies`; from any
//! other peer it is consumed, logged and ignored (the TCP peer stays the client). Without
//! `server.proxy_protocol` nothing is parsed: a PROXY line is then just a bad request.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::HandshakeRefusal;
use crate::metrics::NO_ROUTE;
use crate::policy::proxy_protocol::{inspect, Inspected, MAX_HEADER_BYTES};
use crate::state::TrustedProxies;

/// Pause between looks at a PROXY header that arrived in pieces (it normally arrives whole,
/// in the connection's first segment).
const PARTIAL_HEADER_PAUSE: Duration = Duration::from_millis(5);

/// Turn Nagle's algorithm off on a relayed socket. The gateway writes each frame as soon as it
/// is judged; with Nagle a small frame waits while an earlier one is unacknowledged, which
/// against a peer's delayed ACK (40 ms on Linux, up to 200 ms elsewhere) stalls pushed and
/// pipelined traffic. Best effort: a socket that refuses the option still works.
pub fn set_nodelay(io: &TcpStream) {
    if let Err(e) = io.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// The client address of a new connection, after consuming its PROXY header if there is one.
///
/// # Errors
/// The header is malformed, incomplete after `limit`, or the connection failed.
pub async fn client_peer(
    trusted: &TrustedProxies,
    io: &mut TcpStream,
    proxy_protocol: bool,
    limit: Duration,
) -> io::Result<SocketAddr> {
    let tcp_peer = io.peer_addr()?;
    if !proxy_protocol {
        return Ok(tcp_peer);
    }
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; MAX_HEADER_BYTES];
    loop {
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "no complete PROXY header in time");
        let n = tokio::time::timeout_at(deadline.into(), io.peek(&mut buf)).await.map_err(|_| timed_out())??;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match inspect(&buf[..n]) {
            Inspected::Absent => return Ok(tcp_peer),
            Inspected::Incomplete => {
                if Instant::now() + PARTIAL_HEADER_PAUSE > deadline {
                    return Err(timed_out());
                }
                tokio::time::sleep(PARTIAL_HEADER_PAUSE).await;
            }
            Inspected::Invalid(why) => {
                tracing::warn!(event = "proxy_header_invalid", peer = %tcp_peer, reason = %why, "connection dropped");
                return Err(io::Error::new(io::ErrorKind::InvalidData, why));
            }
            Inspected::Header { len, source } => {
                let mut header = vec![0u8; len];
                io.read_exact(&mut header).await?;
                if !trusted.contains(tcp_peer.ip()) {
                    tracing::warn!(event = "proxy_header_ignored", peer = %tcp_peer, "PROXY header from a peer outside server.trusted_proxies ignored");
                    return Ok(tcp_peer);
                }
                return Ok(source.unwrap_or(tcp_peer));
            }
        }
    }
}

/// The TLS handshake of a public connection, bounded by `limit`.
///
/// # Errors
/// The handshake failed or took longer than `limit`.
pub async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: TcpStream,
    limit: Duration,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    tokio::time::timeout(limit, acceptor.accept(io))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// A TLS acceptor over the listener's (reloadable) server config.
pub fn tls_acceptor(config: rustls::ServerConfig) -> tokio_rustls::TlsAcceptor {
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A public connection on its way through the HTTP/1.1 parser, watched so that a request the
/// parser refuses on its own (bad bytes, a missing or repeated `Host`, an oversized head, a
/// request that never completes) is counted and logged like every other refusal. The
/// gateway's services mark the connection served when the request reaches them; a response
/// written before that is the parser's own, and its status says why.
pub struct Watched<T> {
    io: T,
    watch: Rc<Watch>,
}

/// What is known of a watched connection.
pub struct Watch {
    /// The client address (after PROXY protocol).
    peer: SocketAddr,
    /// When the connection arrived (the handshake histogram's start).
    started: Instant,
    /// The request reached the gateway's own services (or a parser refusal was recorded).
    served: Cell<bool>,
}

// === impl Watched ===

impl<T> Watched<T> {
    /// Watch `io`, a connection from `peer`.
    pub fn new(io: T, peer: SocketAddr) -> Self {
        Self { io, watch: Rc::new(Watch { peer, started: Instant::now(), served: Cell::new(false) }) }
    }

    /// The connection without its watch, for the session (no wrapper on the data path).
    pub fn into_inner(self) -> T {
        self.watch.served.set(true);
        self.io
    }

    /// The watch, for the request's connection data (`on_connect_ext`).
    pub fn watch(&self) -> Rc<Watch> {
        Rc::clone(&self.watch)
    }
}

impl Watch {
    /// The request reached the gateway's services: they count and log it themselves.
    pub fn served(&self) {
        self.served.set(true);
    }

    /// The parser answered `head` (the start of a response) without calling the services.
    fn parser_refused(&self, head: &[u8]) {
        self.served.set(true);
        let status = head.get(9..12).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse::<u16>().ok());
        let denied = match status {
            Some(431) => HandshakeRefusal::HeaderTooLarge,
            Some(408) => HandshakeRefusal::RequestTimeout,
            _ => HandshakeRefusal::BadRequest,
        };
        crate::metrics::handshake(NO_ROUTE, denied.reason(), self.started.elapsed());
        tracing::warn!(
            event = "handshake_refused",
            reason = denied.reason(),
            status = status.unwrap_or(0),
            detail = "refused by the HTTP parser",
            route = NO_ROUTE,
            client_ip = %self.peer.ip(),
        );
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if !self.watch.served.get() && buf.starts_with(b"HTTP/1.") {
            self.watch.parser_refused(buf);
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.watch.served.get() {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                if first.starts_with(b"HTTP/1.") {
                    self.watch.parser_refused(first);
                }
            }
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
