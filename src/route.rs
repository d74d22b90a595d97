//! Which way a request reaches its destination.
//!
//! Every origin is reached along a [`Route`], picked once per request by [`pick`] before
//! anything is dialled: a CONNECT picks it before [`crate::upstream::connect`], a forwarded
//! request before it looks in the upstream pool, which keeps idle connections per route and
//! destination ([`crate::forward::PoolKey`]).
//!
//! `route PATTERN... NAME|direct;` (http or server level) sends the destinations it matches
//! to the parent proxy `NAME` ([`crate::parent`]) or straight to them; the first rule that
//! matches, in written order, wins, and no rule matching means direct. Patterns: an exact
//! name, `*.example.com` (subdomains only), `.example.com` (the name and its subdomains), an
//! IP literal or CIDR (IP-literal targets only: a name is never resolved to pick a route, so
//! the parent may resolve it), and `default`. [`Route::name`] is what `$upstream_proxy` logs.

use std::fmt;
use std::sync::Arc;

use crate::access::cidr::Cidr;
use crate::config::directive::{HTTP_SERVER, MANY, Spec};
use crate::config::{ConfigError, Cx, Directive};
use crate::context::ServerContext;
use crate::parent::Parent;
use crate::parent::settings::Parents;
use crate::target::{Host, Target};

pub const DIRECTIVES: &[Spec] = &[Spec::used("route", HTTP_SERVER, (2, MANY), false)];

/// How an upstream is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Straight to the destination: resolved by sluice, checked against the destination rules
    /// address by address, and dialled.
    Direct,
    /// Through a parent proxy, which resolves the destination.
    Parent(Arc<Parent>),
}

impl Route {
    /// The route's name in logs and metrics: `direct`, or a parent's name.
    pub fn name(&self) -> &str {
        match self {
            Route::Direct => "direct",
            Route::Parent(parent) => &parent.name,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `route` rules of a level, in written order.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    rules: Vec<(Vec<Pattern>, Route)>,
}

/// What one pattern of a `route` matches.
#[derive(Debug, Clone)]
enum Pattern {
    /// `default`: everything.
    Any,
    /// `example.com`.
    Exact(String),
    /// `*.example.com`: `.example.com`, subdomains only.
    Subdomains(String),
    /// `.example.com`: the name and its subdomains.
    NameAndSubdomains(String),
    /// An address or network: IP-literal targets only.
    Addresses(Cidr),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let name = |n: &str| {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            if n.is_empty() || n.contains(['*', '/', ':']) {
                Err(format!("invalid route pattern \"{text}\""))
            } else {
                Ok(n)
            }
        };
        if text == "default" {
            Ok(Pattern::Any)
        } else if let Some(rest) = text.strip_prefix("*.") {
            Ok(Pattern::Subdomains(format!(".{}", name(rest)?)))
        } else if let Some(rest) = text.strip_prefix('.') {
            Ok(Pattern::NameAndSubdomains(name(rest)?))
        } else if text.parse::<std::net::IpAddr>().is_ok() || text.contains('/') {
            Cidr::parse(text)
                .map(Pattern::Addresses)
                .map_err(|why| format!("invalid route address \"{text}\": {why}"))
        } else {
            name(text).map(Pattern::Exact)
        }
    }

    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (Pattern::Any, _) => true,
            (Pattern::Addresses(cidr), Host::Ip(ip)) => cidr.contains(*ip),
            (Pattern::Addresses(_), Host::Name(_)) | (_, Host::Ip(_)) => false,
            (Pattern::Exact(exact), Host::Name(name)) => normal(name) == *exact,
            (Pattern::Subdomains(suffix), Host::Name(name)) => normal(name).ends_with(suffix),
            (Pattern::NameAndSubdomains(base), Host::Name(name)) => {
                let name = normal(name);
                name == *base
                    || name
                        .strip_suffix(base.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
        }
    }
}

/// A name as matched: lowercase, without a trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Routes {
    /// `route PATTERN... NAME|direct;` — a level's first rule replaces the inherited ones.
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        if cx.first_in_level("route") {
            self.rules.clear();
        }
        let (name, patterns) = directive
            .args
            .split_last()
            .ok_or_else(|| cx.not_allowed(directive))?;
        let route = if name == "direct" {
            Route::Direct
        } else {
            match cx.state::<Parents>().0.get(name) {
                Some(parent) => Route::Parent(Arc::clone(parent)),
                None => {
                    return Err(cx.error(
                        directive,
                        format!("unknown parent \"{name}\" in \"route\" (define it with \"parent {name} {{ }}\" or use \"direct\")"),
                    ));
                }
            }
        };
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| cx.error(directive, why))?;
        self.rules.push((patterns, route));
        Ok(())
    }

    /// The route of the first rule matching `host`; direct when none does.
    pub fn pick(&self, host: &Host) -> Route {
        self.rules
            .iter()
            .find(|(patterns, _)| patterns.iter().any(|p| p.matches(host)))
            .map_or(Route::Direct, |(_, route)| route.clone())
    }
}

/// The route to `target` under the rules of the server `ctx` serves.
pub fn pick(ctx: &ServerContext, target: &Target) -> Route {
    ctx.config.routes.pick(&target.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> Host {
        Target::parse_host_port(text, Some(80)).unwrap().host
    }

    #[test]
    fn patterns_match_as_documented() {
        let cases = [
            ("default", "anything.example", true),
            ("example.com", "EXAMPLE.com.", true),
            ("example.com", "a.example.com", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "example.com", false),
            (".example.com", "example.com", true),
            (".example.com", "a.b.example.com", true),
            (".example.com", "badexample.com", false),
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.1.2.3", false),
            ("10.0.0.0/8", "ten.example", false),
            ("example.com", "[::1]", false),
        ];
        for (pattern, target, expected) in cases {
            let pattern = Pattern::parse(pattern).unwrap();
            assert_eq!(
                pattern.matches(&host(target)),
                expected,
                "{pattern:?} {target}"
            );
        }
        assert!(Pattern::parse("10.0.0.0/99").is_err());
        assert!(Pattern::parse("a*b").is_err());
    }
}
