//! Which way a request reaches its destination.
//!
//! Every origin is reached along a [`Route`], picked once per request by [`pick`] before
//! anything is dialled: a CONNECT picks it before [`crate::upstream::connect`], a forwarded
//! request before it looks in the upstream pool, which keeps idle connections per route and
//! destination ([`crate::forward::PoolKey`]).
//!
//! Today every route is [`Route::Direct`]. Parent proxies (`parent NAME { }` and
//! `route PATTERN... NAME|direct;`) plug in here: a `Route::Parent` variant naming the parent,
//! [`pick`] matching the server's `route` rules in written order, and a `Route::Parent` arm in
//! the match of [`crate::upstream`] that dials the parent's servers (with failover) and, for a
//! CONNECT, asks the parent for the tunnel. Forwarding through a parent sends the request in
//! absolute form: the route is known to [`crate::forward`] before the request head is built.
//! [`Route::name`] is what `$upstream_proxy` logs.

use std::fmt;

use crate::context::ServerContext;
use crate::target::Target;

/// How an upstream is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Straight to the destination: resolved by sluice, checked against the destination rules
    /// address by address, and dialled.
    Direct,
}

impl Route {
    /// The route's name in logs and metrics: `direct`, or a parent's name.
    pub fn name(&self) -> &str {
        match self {
            Route::Direct => "direct",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The route to `target` under the rules of the server `ctx` serves.
pub fn pick(_ctx: &ServerContext, _target: &Target) -> Route {
    Route::Direct
}
