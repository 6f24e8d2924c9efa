//! `wsgate-echo`: the echo upstream of `wsgate demo` as a standalone backend, for the
//! conformance suite and benchmarks. Prints `echo listening ws://ADDR` once bound.

use std::net::SocketAddr;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--listen: {e}")))?;
    let bound = wsgate::echo::spawn(addr).await?;
    println!("echo listening ws://{bound}");
    std::future::pending::<()>().await;
    Ok(())
}
