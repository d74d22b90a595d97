//! Reaching an upstream: the one path that CONNECT tunnels and forwarded requests share, so
//! the destination rules hold for both.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::connection::ServerContext;
use crate::dial::{DialOptions, dial};
use crate::error::ProxyError;
use crate::metrics::{self, ConnectFailure};
use crate::target::Target;

/// How long reaching an upstream took, for the access log. A step that did not happen stays
/// `None` (`proxy_connect_address` skips DNS; a refusal by name skips both).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// `$proxy_connect_resolve_time`.
    pub resolve: Option<Duration>,
    /// `$proxy_connect_connect_time`: dialling, all attempts together.
    pub connect: Option<Duration>,
}

/// A connected upstream.
#[derive(Debug)]
pub struct Upstream {
    pub stream: TcpStream,
    /// The address connected to.
    pub addr: SocketAddr,
}

/// Checks `target` against the destination rules, resolves it (unless `address` overrides
/// it, as `proxy_connect_address` does), drops every address the rules refuse, and connects to
/// one of the rest. `timings` records how long resolving and connecting took, failed or not.
pub async fn connect(
    ctx: &ServerContext,
    target: &Target,
    address: Option<(IpAddr, Option<u16>)>,
    options: DialOptions,
    timings: &mut Timings,
) -> Result<Upstream, ProxyError> {
    let result = reach(ctx, target, address, options, timings).await;
    if let Err(error) = &result
        && let Some(cause) = ConnectFailure::of(error)
    {
        metrics::get().connect_failed(cause);
    }
    result
}

async fn reach(
    ctx: &ServerContext,
    target: &Target,
    address: Option<(IpAddr, Option<u16>)>,
    options: DialOptions,
    timings: &mut Timings,
) -> Result<Upstream, ProxyError> {
    let rules = &ctx.config.access.destinations;
    // A host rule settles some names before any DNS query is sent.
    if let Some(Err(denied)) = rules.check_name(&target.host) {
        return Err(ProxyError::DestinationDenied(denied.to_string()));
    }
    let started = Instant::now();
    let addrs = match address {
        Some((ip, port)) => vec![SocketAddr::new(ip, port.unwrap_or(target.port))],
        None => {
            let resolved = ctx.resolver.resolve(target).await;
            timings.resolve = Some(started.elapsed());
            resolved?
        }
    };
    let mut first_denial = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|&addr| {
            let checked = if ctx.own_listeners.contains(addr) {
                Err(format!("{addr} is this proxy's own listener"))
            } else if address.is_some() {
                // The operator chose this address: only the loop guard applies to it.
                Ok(())
            } else {
                rules
                    .check_addr(&target.host, addr.ip())
                    .map_err(|d| d.to_string())
            };
            if let Err(why) = checked {
                first_denial.get_or_insert(why);
                return false;
            }
            true
        })
        .collect();
    if allowed.is_empty() {
        return Err(ProxyError::DestinationDenied(
            first_denial.unwrap_or_default(),
        ));
    }
    let started = Instant::now();
    let dialled = dial(&allowed, &target.to_string(), options).await;
    timings.connect = Some(started.elapsed());
    let (stream, addr) = dialled?;
    Ok(Upstream { stream, addr })
}
