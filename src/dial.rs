//! Connecting upstream: each resolved address in turn, all within one deadline.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::error::ProxyError;

/// How to dial: the overall time allowed and an optional source address.
#[derive(Debug, Clone, Copy)]
pub struct DialOptions {
    /// `proxy_connect_connect_timeout`: the bound on all attempts together.
    pub timeout: Duration,
    /// `proxy_connect_bind`.
    pub bind: Option<IpAddr>,
}

/// Connects to the first of `addrs` that accepts. `shown` names the destination in errors
/// (`example.org:443`). Refused or unreachable everywhere → 502; out of time → 504.
pub async fn dial(
    addrs: &[SocketAddr],
    shown: &str,
    options: DialOptions,
) -> Result<TcpStream, ProxyError> {
    let deadline = Instant::now() + options.timeout;
    let mut last_error = None;
    for &addr in addrs {
        if options
            .bind
            .is_some_and(|bind| bind.is_ipv4() != addr.is_ipv4())
        {
            continue; // a source address of the other family cannot reach this one
        }
        match tokio::time::timeout_at(deadline, connect_one(addr, options.bind)).await {
            Err(_elapsed) => {
                return Err(ProxyError::ConnectTimeout {
                    target: shown.to_string(),
                });
            }
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => {
                log::debug!("connect to {addr} for {shown} failed: {error}");
                last_error = Some(error);
            }
        }
    }
    let error = last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address of the family of proxy_connect_bind",
        )
    });
    Err(ProxyError::ConnectFailed {
        target: shown.to_string(),
        error,
    })
}

async fn connect_one(addr: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}
