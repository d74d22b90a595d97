//! Reaching an upstream: the one path that CONNECT tunnels and forwarded requests share, so
//! the destination rules hold for both.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use crate::connection::ServerContext;
use crate::dial::{DialOptions, dial};
use crate::error::ProxyError;
use crate::target::Target;

/// Checks `target` against the destination rules, resolves it (unless `address` overrides
/// it, as `proxy_connect_address` does), drops every address the rules refuse, and connects to
/// one of the rest.
pub async fn connect(
    ctx: &ServerContext,
    target: &Target,
    address: Option<(IpAddr, Option<u16>)>,
    options: DialOptions,
) -> Result<TcpStream, ProxyError> {
    let rules = &ctx.config.destinations;
    // A host rule settles some names before any DNS query is sent.
    if let Some(Err(denied)) = rules.check_name(&target.host) {
        return Err(ProxyError::DestinationDenied(denied.to_string()));
    }
    let addrs = match address {
        // The operator chose this address: only the loop guard applies to it.
        Some((ip, port)) => vec![SocketAddr::new(ip, port.unwrap_or(target.port))],
        None => ctx.resolver.resolve(target).await?,
    };
    let mut first_denial = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|&addr| {
            let checked = match address {
                Some(_) if ctx.own_listeners.contains(&addr) => {
                    Err(format!("{addr} is this proxy's own listener"))
                }
                Some(_) => Ok(()),
                None => rules
                    .check_addr(&target.host, addr, &ctx.own_listeners)
                    .map_err(|d| d.to_string()),
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
    dial(&allowed, &target.to_string(), options).await
}
