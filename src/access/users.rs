//! `users NAME... { }` blocks: different reach and bandwidth for different people.
//!
//! Inside a server, a `users` block holds destination rules (`destination_allow`,
//! `destination_deny`, `destination_mode`), CONNECT port rules (`proxy_connect_allow`) and the
//! `limit_rate*` directives. A request authenticated as one of the names gets the block's
//! rules; everyone else gets the server's. A block starts as a copy of its server's rules, so
//! it states only what differs; a list written in it replaces the inherited one, as in nginx.
//!
//! The identity is a name string: a Basic user today, a client certificate's subject once the
//! TLS listener fills it in. [`rules_for`] is the one place that picks the rules.

use super::destination::{DestinationRules, Verdict};
use crate::config::directive::{Context, Entry};
use crate::config::values::PortList;
use crate::config::{ConfigError, Cx, Directive, Origin};
use crate::error::ProxyError;
use crate::limits::settings::{RATE_DIRECTIVES, Rates};
use crate::metrics;
use crate::route::Route;
use crate::settings::Server;
use crate::target::{Host, Target};
use std::net::SocketAddr;

/// One `users` block.
#[derive(Debug, Clone)]
pub struct UsersBlock {
    pub names: Vec<String>,
    pub origin: Origin,
    pub destinations: DestinationRules,
    /// `proxy_connect_allow`.
    pub connect_ports: PortList,
    pub rates: Rates,
}

/// The rules one request is held to.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The authenticated identity, if any.
    pub user: Option<&'a str>,
    pub destinations: &'a DestinationRules,
    /// The ports a CONNECT may reach.
    pub connect_ports: &'a PortList,
    pub rates: &'a Rates,
}

/// The rules for a request of `server` authenticated as `user`: those of the `users` block
/// that names the user, else the server's own.
pub fn rules_for<'a>(server: &'a Server, user: Option<&'a str>) -> Rules<'a> {
    let block = user.and_then(|user| {
        server
            .users
            .iter()
            .find(|block| block.names.iter().any(|name| name == user))
    });
    match block {
        Some(block) => Rules {
            user,
            destinations: &block.destinations,
            connect_ports: &block.connect_ports,
            rates: &block.rates,
        },
        None => Rules {
            user,
            destinations: &server.access.destinations,
            connect_ports: &server.connect.ports,
            rates: &server.rates,
        },
    }
}

/// Judges a pooled upstream connection to `addr`, opened for an earlier request (perhaps
/// another user's), before it carries this one: the rules [`crate::upstream::connect`] applies,
/// on the address it is connected to (a parent's for a routed request, which the name rules
/// and an IP-literal target's address judge instead).
pub fn judge_reused(
    rules: &Rules,
    route: &Route,
    target: &Target,
    addr: SocketAddr,
) -> Result<Verdict, ProxyError> {
    let destinations = rules.destinations;
    let by_name = destinations
        .check_name(&target.host)
        .unwrap_or(Ok(Verdict::Allow));
    let by_rest = match (route, &target.host) {
        (Route::Parent(_), Host::Name(_)) => destinations.check_unresolved(&target.host),
        (Route::Parent(_), Host::Ip(ip)) => destinations.check_addr(&target.host, *ip),
        (Route::Direct, _) => destinations.check_addr(&target.host, addr.ip()),
    };
    let verdict = by_name
        .and_then(|said| Ok(said.and(by_rest?)))
        .map_err(|denied| ProxyError::DestinationDenied(denied.to_string()))?;
    if verdict == Verdict::WouldDeny {
        metrics::get().would_deny(rules.user);
    }
    Ok(verdict)
}

/// The directives a `users` block takes, each applied to the block's own copy.
const USERS_LEVEL: &[Entry<UsersBlock>] = &[
    Entry {
        specs: super::settings::DIRECTIVES,
        set: |cx, d, block| super::settings::destinations(cx, d, &mut block.destinations),
    },
    Entry {
        specs: crate::connect::DIRECTIVES,
        set: |cx, d, block| {
            block.connect_ports = cx.port_list(d)?;
            Ok(())
        },
    },
    Entry {
        specs: RATE_DIRECTIVES,
        set: |cx, d, block| block.rates.set(cx, d),
    },
];

/// Reads a `users NAME... { }` block of `server`, whose own settings are already applied.
pub fn block(
    cx: &mut Cx,
    directive: &Directive,
    server: &Server,
) -> Result<UsersBlock, ConfigError> {
    for name in &directive.args {
        if let Some(other) = server.users.iter().find(|block| block.names.contains(name)) {
            return Err(cx.error(
                directive,
                format!(
                    "user \"{name}\" is already named by the \"users\" block in {}",
                    other.origin
                ),
            ));
        }
    }
    let mut block = UsersBlock {
        names: directive.args.clone(),
        origin: cx.origin(directive.line),
        destinations: server.access.destinations.clone(),
        connect_ports: server.connect.ports.clone(),
        rates: server.rates,
    };
    let body = directive.block.as_deref().unwrap_or_default();
    for inner in cx.check(body, Context::Users)? {
        cx.dispatch(inner, Context::Users, USERS_LEVEL, &mut block)?;
    }
    Ok(block)
}

/// Checks a server's `users` blocks once the server is read: they need an identity to go by.
pub fn check(cx: &Cx, blocks: &[&Directive], server: &Server) -> Result<(), ConfigError> {
    match blocks.first() {
        Some(first) if server.access.auth_realm.is_none() => Err(cx.error(
            first,
            "\"users\" needs \"auth_basic\" in the same server block or above it: \
             requests are matched to a users block by the name they authenticated with",
        )),
        _ => Ok(()),
    }
}
