//! A small WebSocket echo server: the upstream of `wsgate demo`, and a test backend.
//!
//! Echoes text and binary messages; answers the first subprotocol offered; on the path
//! `/whoami` it first sends one JSON text message describing the request it received
//! (`X-Wsgate-*` headers, the requested subprotocol and path), so a client can see what the
//! gateway forwarded.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Bind `addr` and serve echo connections until the process ends. Returns the bound address.
///
/// # Errors
/// The bind error.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "echo upstream: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(local)
}

// tungstenite's handshake callback signature fixes the (large) error type.
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream) {
    let mut seen = serde_json::Map::new();
    let mut whoami = false;
    let callback = |req: &Request, mut resp: Response| {
        whoami = req.uri().path() == "/whoami";
        for (name, value) in req.headers() {
            let n = name.as_str();
            if n.starts_with("x-wsgate-") || n == "sec-websocket-protocol" {
                seen.insert(n.to_string(), value.to_str().unwrap_or("").into());
            }
        }
        seen.insert("path".into(), req.uri().path().into());
        if let Some(first) = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|p| HeaderValue::from_str(p.trim()).ok())
        {
            resp.headers_mut().insert("sec-websocket-protocol", first);
        }
        Ok(resp)
    };
    // A small read buffer: the default (128 KiB) is allocated per connection.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await else {
        return;
    };
    if whoami && ws.send(Message::text(serde_json::Value::Object(seen).to_string())).await.is_err() {
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Close(_) => break,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}
