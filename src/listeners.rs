//! Probing the gateway's own traffic listeners: does each accept a connection (and, for TLS,
//! complete a handshake)? For `/readyz` and for the readiness sent to systemd.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Traffic listeners, as addresses a local probe can connect to, and whether they speak TLS.
pub fn listener_probes(gateway: &crate::gateway::Gateway) -> Vec<(SocketAddr, bool)> {
    let cfg = &gateway.config;
    let plain = cfg.http.iter().map(|a| (probe_addr(*a), false));
    let tls = cfg.https.iter().map(|h| (probe_addr(h.addr), true));
    plain.chain(tls).collect()
}

/// Connects to a listener; for TLS, completes a handshake too (a bare TCP connect would be
/// logged by the listener as a failed handshake on every probe).
pub async fn probe(addr: SocketAddr, tls: bool) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if !tls {
        return true;
    }
    let Ok(mut connector) = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
    else {
        return false;
    };
    // Our own listener on loopback: the probe asks "does it handshake", not "whom do I trust".
    connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let Ok(ssl) = connector
        .build()
        .configure()
        .and_then(|c| c.into_ssl("localhost"))
    else {
        return false;
    };
    let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, stream) else {
        return false;
    };
    let up = std::pin::Pin::new(&mut stream).connect().await.is_ok();
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    up
}

/// A wildcard bind address is probed on loopback.
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}
