//! Reaching an upstream: the one path that CONNECT tunnels and forwarded requests share, so
//! the destination rules hold for both.
//!
//! The caller picks the [`Route`] ([`crate::route::pick`]); [`connect`] goes that way and
//! hands back the connection with what the access log needs: the address reached, the route,
//! and how long each step took. The destination rules that judge a name apply before any
//! route; those that judge addresses apply, on the direct route, to every resolved address.
//! A parent proxy's route dials the parent's servers ([`crate::parent`]) and returns the
//! connection to the one that answered (for a CONNECT, with the tunnel already granted, and
//! any bytes the parent sent after its answer kept for the client). On that route sluice never
//! resolves the destination: address rules apply to IP-literal targets only, and the name
//! rules before the request leaves.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::access::users::Rules;
use crate::access::{DestinationRules, Verdict};
use crate::context::ServerContext;
use crate::dial::{DialOptions, dial};
use crate::error::ProxyError;
use crate::metrics;
use crate::route::Route;
use crate::target::{Host, Target};

mod stream;

pub use stream::UpstreamStream;

/// How reaching an upstream went, for the access log: how long each step took and what the
/// destination rules said. A step that did not happen stays `None` (`proxy_connect_address`
/// skips DNS; a refusal by name skips both).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// `$destination_verdict`.
    pub verdict: Option<Verdict>,
    /// `$proxy_connect_resolve_time`.
    pub resolve: Option<Duration>,
    /// `$proxy_connect_connect_time`: dialling, all attempts together.
    pub connect: Option<Duration>,
}

/// A connected upstream.
#[derive(Debug)]
pub struct Upstream {
    /// A plain socket, or TLS to a parent's `ssl` server.
    pub stream: UpstreamStream,
    /// The address connected to (`$upstream_addr`): the origin's on a direct route.
    pub addr: SocketAddr,
    /// The way it was reached.
    pub route: Route,
    /// Bytes already read from the upstream that belong to the client (what a parent sent
    /// right after granting a tunnel).
    pub early: Vec<u8>,
}

/// What the connection is for: a parent is asked for the tunnel of a CONNECT, while a
/// forwarded request is sent to it as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Tunnel,
    Forward,
}

/// Reaches `target` along `route`, under the destination rules `rules` (the server's, or a
/// `users` block's). `address` overrides resolving, as `proxy_connect_address` does; `timings`
/// records how long resolving and connecting took, failed or not, and the rules' verdict. A
/// failure is counted in the metrics by its cause.
#[allow(clippy::too_many_arguments)]
pub async fn connect(
    ctx: &ServerContext,
    route: &Route,
    purpose: Purpose,
    target: &Target,
    rules: &Rules<'_>,
    address: Option<(IpAddr, Option<u16>)>,
    options: DialOptions,
    timings: &mut Timings,
) -> Result<Upstream, ProxyError> {
    let mut verdict = Verdict::Allow;
    let destinations = rules.destinations;
    let result = reach(
        ctx,
        route,
        purpose,
        target,
        destinations,
        address,
        options,
        timings,
        &mut verdict,
    )
    .await;
    if let Err(error) = &result
        && let Some(cause) = error.class().connect_failure
    {
        metrics::get().connect_failed(cause);
    }
    match &result {
        Err(ProxyError::DestinationDenied(_)) => verdict = Verdict::Deny,
        Ok(_) if verdict == Verdict::WouldDeny => metrics::get().would_deny(rules.user),
        _ => {}
    }
    timings.verdict = Some(verdict);
    result
}

/// The destination rules that judge a name apply whatever the route; then the route's way.
/// `verdict` becomes the sternest thing the rules said of a request that goes on.
#[allow(clippy::too_many_arguments)]
async fn reach(
    ctx: &ServerContext,
    route: &Route,
    purpose: Purpose,
    target: &Target,
    rules: &DestinationRules,
    address: Option<(IpAddr, Option<u16>)>,
    options: DialOptions,
    timings: &mut Timings,
    verdict: &mut Verdict,
) -> Result<Upstream, ProxyError> {
    // A host rule settles some names before any DNS query is sent.
    match rules.check_name(&target.host) {
        Some(Err(denied)) => return Err(ProxyError::DestinationDenied(denied.to_string())),
        Some(Ok(said)) => *verdict = verdict.and(said),
        None => {}
    }
    match route {
        Route::Direct => direct(ctx, target, rules, address, options, timings, verdict).await,
        Route::Parent(parent) => {
            // The parent resolves names: they meet the name rules only, address rules passed
            // over. An address literal is judged here, loop guard included.
            if let Host::Name(_) = target.host {
                let said = rules
                    .check_unresolved(&target.host)
                    .map_err(|denied| ProxyError::DestinationDenied(denied.to_string()))?;
                *verdict = verdict.and(said);
            }
            if let Host::Ip(ip) = target.host {
                let addr = SocketAddr::new(ip, target.port);
                if ctx.own_listeners.contains(addr) {
                    return Err(ProxyError::DestinationDenied(format!(
                        "{addr} is this proxy's own listener"
                    )));
                }
                let said = rules
                    .check_addr(&target.host, ip)
                    .map_err(|denied| ProxyError::DestinationDenied(denied.to_string()))?;
                *verdict = verdict.and(said);
            }
            let started = Instant::now();
            let reached = parent
                .reach(ctx, target, purpose == Purpose::Tunnel, options)
                .await;
            timings.connect = Some(started.elapsed());
            let reached = reached?;
            Ok(Upstream {
                stream: reached.stream,
                addr: reached.addr,
                route: route.clone(),
                early: reached.early,
            })
        }
    }
}

/// The direct route: resolves `target` (unless `address` overrides it), drops every address
/// the destination rules or the loop guard refuse, and connects to one of the rest.
async fn direct(
    ctx: &ServerContext,
    target: &Target,
    rules: &DestinationRules,
    address: Option<(IpAddr, Option<u16>)>,
    options: DialOptions,
    timings: &mut Timings,
    verdict: &mut Verdict,
) -> Result<Upstream, ProxyError> {
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
                Ok(Verdict::Allow)
            } else {
                rules
                    .check_addr(&target.host, addr.ip())
                    .map_err(|d| d.to_string())
            };
            if let Ok(said) = checked {
                *verdict = verdict.and(said);
            }
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
    Ok(Upstream {
        stream: stream.into(),
        addr,
        route: Route::Direct,
        early: Vec::new(),
    })
}
