//! Where the proxy may go: `destination_allow` / `destination_deny`, then built-in denials.
//!
//! Rules are tried in order and the first match wins. Host rules look at the name the client
//! asked for; address rules look at the addresses the name resolved to, so a name that
//! resolves to 127.0.0.1 is caught (no DNS-rebinding bypass). With no matching rule, the
//! built-in list refuses loopback, unspecified, multicast and link-local addresses — the last
//! holding cloud metadata services at 169.254.169.254. The proxy's own listeners are refused
//! whatever the rules say: a request to itself would loop.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::cidr::Cidr;
use crate::config::Origin;
use crate::target::Host;

/// A host name pattern, as in nginx's `server_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `example.com`: that name only.
    Exact(String),
    /// `*.example.com`: names below it, not the name itself.
    Below(String),
    /// `.example.com`: the name and every name below it.
    AndBelow(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> HostPattern {
        let text = text.trim_end_matches('.').to_ascii_lowercase();
        if let Some(base) = text.strip_prefix("*.") {
            HostPattern::Below(base.to_string())
        } else if let Some(base) = text.strip_prefix('.') {
            HostPattern::AndBelow(base.to_string())
        } else {
            HostPattern::Exact(text)
        }
    }

    fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        let below = |base: &str| {
            name.len() > base.len()
                && name.ends_with(base)
                && name[..name.len() - base.len()].ends_with('.')
        };
        match self {
            HostPattern::Exact(exact) => name == exact,
            HostPattern::Below(base) => below(base),
            HostPattern::AndBelow(base) => name == base || below(base),
        }
    }
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    All,
    Host(HostPattern),
    Addr(Cidr),
}

#[derive(Debug, Clone)]
pub struct DestinationRule {
    pub allow: bool,
    pub matcher: Matcher,
    pub origin: Origin,
}

/// Why a destination is refused, worded for the client's 403 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ranges refused unless a rule allows them first.
const BUILT_IN: &[(Cidr, &str)] = &[
    (
        Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        "loopback",
    ),
    (Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128), "loopback"),
    (
        Cidr::new(IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)), 8),
        "unspecified",
    ),
    (
        Cidr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
        "unspecified",
    ),
    (
        Cidr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
        "link-local (cloud metadata)",
    ),
    (
        Cidr::new(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
        "link-local",
    ),
    (
        Cidr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4),
        "multicast",
    ),
    (
        Cidr::new(IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8),
        "multicast",
    ),
    (
        Cidr::new(IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)), 32),
        "broadcast",
    ),
];

/// A server block's destination rules.
#[derive(Debug, Clone, Default)]
pub struct DestinationRules {
    rules: Vec<DestinationRule>,
}

impl DestinationRules {
    pub fn push(&mut self, rule: DestinationRule) {
        self.rules.push(rule);
    }

    /// The decision the name alone settles: `Some` when a host rule (or `all`) matches before
    /// any address rule could. `None` means the addresses decide.
    pub fn check_name(&self, host: &Host) -> Option<Result<(), Denied>> {
        for rule in &self.rules {
            let decided = match (&rule.matcher, host) {
                (Matcher::All, _) => true,
                (Matcher::Host(pattern), Host::Name(name)) => pattern.matches(name),
                (Matcher::Host(_), Host::Ip(_)) => false,
                (Matcher::Addr(_), _) => return None,
            };
            if decided {
                return Some(verdict(rule, host));
            }
        }
        None
    }

    /// The decision for one resolved address of `host`. `listeners` are the proxy's own.
    pub fn check_addr(
        &self,
        host: &Host,
        addr: SocketAddr,
        listeners: &[SocketAddr],
    ) -> Result<(), Denied> {
        if is_own_listener(addr, listeners) {
            return Err(Denied(format!("{addr} is this proxy's own listener")));
        }
        let ip = addr.ip().to_canonical();
        for rule in &self.rules {
            let matched = match (&rule.matcher, host) {
                (Matcher::All, _) => true,
                (Matcher::Host(pattern), Host::Name(name)) => pattern.matches(name),
                (Matcher::Host(_), Host::Ip(_)) => false,
                (Matcher::Addr(range), _) => range.contains(ip),
            };
            if matched {
                return verdict(rule, host).map_err(|Denied(why)| Denied(format!("{ip}: {why}")));
            }
        }
        match BUILT_IN.iter().find(|(range, _)| range.contains(ip)) {
            Some((_, what)) => Err(Denied(format!(
                "{ip} is a {what} address, which sluice refuses unless a destination_allow rule allows it"
            ))),
            None => Ok(()),
        }
    }
}

fn verdict(rule: &DestinationRule, host: &Host) -> Result<(), Denied> {
    if rule.allow {
        Ok(())
    } else {
        Err(Denied(format!(
            "{host} is refused by destination_deny in {}",
            rule.origin
        )))
    }
}

/// Whether `addr` is one of the proxy's listeners. A listener on all addresses counts for the
/// loopback and unspecified addresses of its family at its port.
fn is_own_listener(addr: SocketAddr, listeners: &[SocketAddr]) -> bool {
    let ip = addr.ip().to_canonical();
    listeners.iter().any(|listener| {
        listener.port() == addr.port()
            && (listener.ip() == ip
                || (listener.ip().is_unspecified()
                    && listener.is_ipv4() == ip.is_ipv4()
                    && (ip.is_loopback() || ip.is_unspecified())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(line: u32) -> Origin {
        Origin {
            file: "p.conf".into(),
            line,
        }
    }

    fn rule(allow: bool, matcher: Matcher, line: u32) -> DestinationRule {
        DestinationRule {
            allow,
            matcher,
            origin: origin(line),
        }
    }

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_patterns() {
        assert!(HostPattern::parse("Example.com").matches("example.com"));
        assert!(!HostPattern::parse("example.com").matches("a.example.com"));
        assert!(HostPattern::parse("*.example.com").matches("a.b.example.com"));
        assert!(!HostPattern::parse("*.example.com").matches("example.com"));
        assert!(!HostPattern::parse("*.example.com").matches("badexample.com"));
        assert!(HostPattern::parse(".example.com").matches("example.com"));
        assert!(HostPattern::parse(".example.com").matches("x.example.com"));
    }

    #[test]
    fn built_in_denials_hold_without_rules() {
        let rules = DestinationRules::default();
        for denied in [
            "127.0.0.1:443",
            "[::1]:443",
            "169.254.169.254:80",
            "[fe80::1]:443",
            "0.0.0.0:443",
            "224.0.0.1:443",
            "[::ffff:127.0.0.1]:443",
        ] {
            assert!(
                rules
                    .check_addr(&name("x.test"), addr(denied), &[])
                    .is_err(),
                "{denied}"
            );
        }
        assert!(
            rules
                .check_addr(&name("x.test"), addr("192.0.2.1:443"), &[])
                .is_ok()
        );
        assert_eq!(rules.check_name(&name("x.test")), None);
    }

    #[test]
    fn rules_in_order_first_match_wins() {
        let mut rules = DestinationRules::default();
        rules.push(rule(
            false,
            Matcher::Host(HostPattern::parse("*.blocked.test")),
            1,
        ));
        rules.push(rule(
            true,
            Matcher::Addr(Cidr::parse("127.0.0.0/8").unwrap()),
            2,
        ));
        rules.push(rule(
            false,
            Matcher::Addr(Cidr::parse("192.0.2.0/24").unwrap()),
            3,
        ));
        // A host rule before any address rule decides without DNS.
        assert!(
            rules
                .check_name(&name("a.blocked.test"))
                .unwrap()
                .unwrap_err()
                .0
                .contains("p.conf:1")
        );
        assert_eq!(rules.check_name(&name("ok.test")), None);
        // Address rules see the resolved addresses.
        assert!(
            rules
                .check_addr(&name("local.test"), addr("127.0.0.1:443"), &[])
                .is_ok()
        );
        let denied = rules
            .check_addr(&name("doc.test"), addr("192.0.2.5:443"), &[])
            .unwrap_err();
        assert!(denied.0.contains("p.conf:3"), "{denied}");
    }

    #[test]
    fn the_proxys_own_listeners_are_never_a_destination() {
        let mut rules = DestinationRules::default();
        rules.push(rule(true, Matcher::All, 1));
        let own = [addr("127.0.0.1:3128"), addr("0.0.0.0:8080")];
        assert!(
            rules
                .check_addr(&name("x"), addr("127.0.0.1:3128"), &own)
                .is_err()
        );
        assert!(
            rules
                .check_addr(&name("x"), addr("127.0.0.1:8080"), &own)
                .is_err()
        );
        assert!(
            rules
                .check_addr(&name("x"), addr("127.0.0.1:3129"), &own)
                .is_ok()
        );
    }
}
