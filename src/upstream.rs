//! Reaching an upstream: the one path that CONNECT tunnels and forwarded requests share.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use crate::dial::{DialOptions, dial};
use crate::error::ProxyError;
use crate::resolve::Resolver;
use crate::target::Target;

/// Resolves `target` (unless `address` overrides it, as `proxy_connect_address` does) and
/// connects to it.
pub async fn connect(
    resolver: &Resolver,
    target: &Target,
    address: Option<(IpAddr, Option<u16>)>,
    options: DialOptions,
) -> Result<TcpStream, ProxyError> {
    let addrs = match address {
        Some((ip, port)) => vec![SocketAddr::new(ip, port.unwrap_or(target.port))],
        None => resolver.resolve(target).await?,
    };
    dial(&addrs, &target.to_string(), options).await
}
