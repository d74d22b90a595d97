//! Where the proxy may go: `destination_allow` / `destination_deny`, then built-in denials.
//!
//! Rules are tried in order and the first match wins. Host rules look at the name the client
//! asked for; address rules look at the addresses the name resolved to, so a name that
//! resolves to 127.0.0.1 is caught (no DNS-rebinding bypass).
//!
//! The built-in list refuses loopback, unspecified, multicast and link-local addresses, and
//! the clouds' metadata services (169.254.169.254, `fd00:ec2::254`, `100.100.100.200` …). It
//! holds on the resolved addresses whatever rule allowed the request: a name rule
//! (`destination_allow *.partner.example;`) or `destination_allow all;` says which names may
//! be asked for, not that their DNS may point inside the host. Only an address rule naming a
//! range inside a built-in one (`destination_allow 127.0.0.0/8;`, `… 169.254.169.254;`)
//! opens it; a wider range such as `0.0.0.0/0` does not.
//!
//! An IPv6 address that carries an IPv4 address (`::ffff:127.0.0.1`, NAT64 `64:ff9b::7f00:1`,
//! 6to4, Teredo) is judged by that IPv4 address too: see [`super::embedded`]. The proxy's own
//! listeners are refused whatever the rules say, by [`super::own`].
//!
//! `destination_mode report` turns a rule's denial into a [`Verdict::WouldDeny`]: the rules are
//! then read on as if that rule were not there, the request goes on, and the verdict is logged
//! and counted, so an allowlist can meet real traffic before it bites. The built-in list and
//! the loop guard are never in report mode.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cidr::Cidr;
use super::embedded;
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

/// Ranges refused unless an address rule inside them allows them; the refusal names the entry.
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
        Cidr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
            128,
        ),
        "cloud metadata (AWS)",
    ),
    (
        Cidr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254)),
            128,
        ),
        "cloud metadata (Google Cloud)",
    ),
    (
        Cidr::new(IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), 32),
        "cloud metadata (Alibaba Cloud)",
    ),
    (
        Cidr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)), 32),
        "cloud metadata (Oracle Cloud Classic)",
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

/// What the destination rules said of a request that went on (`$destination_verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// A rule denies it, but `destination_mode report` lets it through.
    WouldDeny,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::WouldDeny => "would-deny",
            Verdict::Deny => "deny",
        }
    }

    /// The verdict of a request judged twice (a name, then addresses): the sterner one.
    pub fn and(self, other: Verdict) -> Verdict {
        if other as u8 > self as u8 {
            other
        } else {
            self
        }
    }
}

/// A server block's (or a `users` block's) destination rules.
#[derive(Debug, Clone, Default)]
pub struct DestinationRules {
    rules: Vec<DestinationRule>,
    /// `destination_mode report`: a rule's denial is only reported.
    pub report: bool,
}

impl DestinationRules {
    pub fn push(&mut self, rule: DestinationRule) {
        self.rules.push(rule);
    }

    /// Forgets the rules (a level's first rule replaces what it inherited), not the mode.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The decision the name alone settles: `Some` when a host rule (or `all`) matches before
    /// any address rule could. `None` means the addresses decide. `Some(Ok)` is no licence for
    /// the addresses: [`DestinationRules::check_addr`] still holds them to the built-in list.
    pub fn check_name(&self, host: &Host) -> Option<Result<Verdict, Denied>> {
        let mut reported = Verdict::Allow;
        for rule in &self.rules {
            let decided = match (&rule.matcher, host) {
                (Matcher::All, _) => true,
                (Matcher::Host(pattern), Host::Name(name)) => pattern.matches(name),
                (Matcher::Host(_), Host::Ip(_)) => false,
                (Matcher::Addr(_), _) => break,
            };
            if decided {
                match self.verdict(rule, host) {
                    // Report mode: noted, then judged as if the rule were not there.
                    Ok(Verdict::WouldDeny) => reported = Verdict::WouldDeny,
                    said => return Some(said.map(|said| said.and(reported))),
                }
            }
        }
        (reported == Verdict::WouldDeny).then_some(Ok(reported))
    }

    /// The decision for a name sluice does not resolve (a parent proxy resolves it): the
    /// first host rule (or `all`) that matches decides. Address rules cannot see the name's
    /// addresses and are passed over; no match allows.
    pub fn check_unresolved(&self, name: &Host) -> Result<Verdict, Denied> {
        let mut reported = Verdict::Allow;
        let matching = self
            .rules
            .iter()
            .filter(|rule| match (&rule.matcher, name) {
                (Matcher::All, _) => true,
                (Matcher::Host(pattern), Host::Name(name)) => pattern.matches(name),
                (Matcher::Host(_) | Matcher::Addr(_), _) => false,
            });
        for rule in matching {
            match self.verdict(rule, name) {
                Ok(Verdict::WouldDeny) => reported = Verdict::WouldDeny,
                said => return said.map(|said| said.and(reported)),
            }
        }
        Ok(reported)
    }

    /// The decision for one resolved address of `host`. An address that carries an IPv4
    /// address passes only if every address it stands for passes.
    pub fn check_addr(&self, host: &Host, ip: IpAddr) -> Result<Verdict, Denied> {
        let asked = ip.to_canonical();
        embedded::judged(asked)
            .into_iter()
            .try_fold(Verdict::Allow, |verdict, judged| {
                Ok(verdict.and(self.check_one(host, asked, judged)?))
            })
    }

    /// The decision for `judged`, one of the addresses `asked` stands for.
    fn check_one(&self, host: &Host, asked: IpAddr, judged: IpAddr) -> Result<Verdict, Denied> {
        let shown = if asked == judged {
            asked.to_string()
        } else {
            format!("{asked} (carrying {judged})")
        };
        // The range of the address rule that allowed `judged`; a host rule or `all` opens none.
        let mut opened = None;
        let mut said = Verdict::Allow;
        for rule in &self.rules {
            let matched = match (&rule.matcher, host) {
                (Matcher::All, _) => true,
                (Matcher::Host(pattern), Host::Name(name)) => pattern.matches(name),
                (Matcher::Host(_), Host::Ip(_)) => false,
                (Matcher::Addr(range), _) => range.contains(judged),
            };
            if !matched {
                continue;
            }
            let verdict = self
                .verdict(rule, host)
                .map_err(|Denied(why)| Denied(format!("{shown}: {why}")))?;
            if verdict == Verdict::WouldDeny {
                // Report mode: noted, then judged as if the rule were not there.
                said = verdict;
                continue;
            }
            if let Matcher::Addr(range) = &rule.matcher {
                opened = Some(*range);
            }
            break;
        }
        match BUILT_IN.iter().find(|(range, _)| range.contains(judged)) {
            Some((range, _)) if opened.is_some_and(|rule| rule.within(range)) => Ok(said),
            Some((range, what)) => Err(Denied(format!(
                "{shown} is a {what} address ({range}), which sluice refuses unless a \
                 destination_allow rule names an address range inside {range}"
            ))),
            None => Ok(said),
        }
    }

    /// What `rule`, which matched `host`, says under this mode.
    fn verdict(&self, rule: &DestinationRule, host: &Host) -> Result<Verdict, Denied> {
        if rule.allow {
            Ok(Verdict::Allow)
        } else if self.report {
            Ok(Verdict::WouldDeny)
        } else {
            Err(Denied(format!(
                "{host} is refused by destination_deny in {}",
                rule.origin
            )))
        }
    }
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

    fn ip(s: &str) -> IpAddr {
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
    fn an_unresolved_name_meets_the_name_rules_past_any_address_rule() {
        let mut rules = DestinationRules::default();
        let loopback = Cidr::parse("127.0.0.0/8").unwrap();
        rules.push(rule(true, Matcher::Addr(loopback), 1));
        rules.push(rule(
            false,
            Matcher::Host(HostPattern::parse(".blocked.test")),
            2,
        ));
        assert_eq!(rules.check_name(&name("www.blocked.test")), None);
        assert!(rules.check_unresolved(&name("www.blocked.test")).is_err());
        assert!(rules.check_unresolved(&name("fine.test")).is_ok());
        rules.push(rule(false, Matcher::All, 3));
        assert!(rules.check_unresolved(&name("fine.test")).is_err());
    }

    #[test]
    fn report_mode_notes_a_denial_and_reads_on_but_keeps_the_built_in_list() {
        let mut rules = DestinationRules::default();
        rules.push(rule(
            false,
            Matcher::Host(HostPattern::parse(".blocked.test")),
            1,
        ));
        rules.push(rule(
            false,
            Matcher::Addr(Cidr::parse("192.0.2.9").unwrap()),
            2,
        ));
        rules.push(rule(
            true,
            Matcher::Addr(Cidr::parse("127.0.0.2").unwrap()),
            3,
        ));
        rules.push(rule(false, Matcher::All, 4));
        assert!(rules.check_name(&name("a.blocked.test")).unwrap().is_err());
        rules.report = true;
        let blocked = name("a.blocked.test");
        assert_eq!(rules.check_name(&blocked), Some(Ok(Verdict::WouldDeny)));
        assert_eq!(rules.check_unresolved(&blocked), Ok(Verdict::WouldDeny));
        assert_eq!(
            rules.check_addr(&blocked, ip("192.0.2.1")),
            Ok(Verdict::WouldDeny)
        );
        let fine = name("fine.test");
        assert_eq!(
            rules.check_addr(&fine, ip("192.0.2.9")),
            Ok(Verdict::WouldDeny)
        );
        // A rule further down opens a built-in range; nothing else does, report or not.
        assert_eq!(rules.check_addr(&fine, ip("127.0.0.2")), Ok(Verdict::Allow));
        assert!(rules.check_addr(&blocked, ip("127.0.0.1")).is_err());
        assert!(rules.check_addr(&blocked, ip("169.254.169.254")).is_err());
    }

    #[test]
    fn built_in_denials_hold_without_rules() {
        let rules = DestinationRules::default();
        for denied in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "224.0.0.1",
            "::ffff:127.0.0.1",
            "fd00:ec2::254",
            "fd20:ce::254",
            "100.100.100.200",
        ] {
            assert!(
                rules.check_addr(&name("x.test"), ip(denied)).is_err(),
                "{denied}"
            );
        }
        assert!(rules.check_addr(&name("x.test"), ip("192.0.2.1")).is_ok());
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
                .check_addr(&name("local.test"), ip("127.0.0.1"))
                .is_ok()
        );
        let denied = rules
            .check_addr(&name("doc.test"), ip("192.0.2.5"))
            .unwrap_err();
        assert!(denied.0.contains("p.conf:3"), "{denied}");
    }

    #[test]
    fn a_name_rule_or_all_does_not_open_a_built_in_range() {
        for allowing in [
            Matcher::Host(HostPattern::parse("*.partner.example")),
            Matcher::All,
            Matcher::Addr(Cidr::parse("0.0.0.0/0").unwrap()),
            Matcher::Addr(Cidr::parse("::/0").unwrap()),
        ] {
            let mut rules = DestinationRules::default();
            rules.push(rule(true, allowing.clone(), 1));
            let host = name("evil.partner.example");
            assert!(
                !matches!(rules.check_name(&host), Some(Err(_))),
                "{allowing:?}"
            );
            for local in ["127.0.0.1", "169.254.169.254", "::1", "fd00:ec2::254"] {
                let denied = rules.check_addr(&host, ip(local)).unwrap_err();
                assert!(
                    denied.0.contains("which sluice refuses unless"),
                    "{allowing:?} {local}: {denied}"
                );
            }
            assert!(rules.check_addr(&host, ip("192.0.2.1")).is_ok());
        }
    }

    #[test]
    fn an_address_rule_inside_a_built_in_range_opens_it() {
        let mut rules = DestinationRules::default();
        rules.push(rule(
            true,
            Matcher::Addr(Cidr::parse("127.0.0.0/8").unwrap()),
            1,
        ));
        rules.push(rule(
            true,
            Matcher::Addr(Cidr::parse("169.254.169.254").unwrap()),
            2,
        ));
        rules.push(rule(true, Matcher::Addr(Cidr::parse("::1").unwrap()), 3));
        let host = name("x.test");
        for opened in ["127.0.0.1", "127.5.5.5", "169.254.169.254", "::1"] {
            assert!(rules.check_addr(&host, ip(opened)).is_ok(), "{opened}");
        }
        // Only what the rules name: the rest of link-local stays shut.
        assert!(rules.check_addr(&host, ip("169.254.0.1")).is_err());
    }

    #[test]
    fn an_ipv6_address_carrying_an_ipv4_address_is_judged_by_it() {
        let rules = DestinationRules::default();
        let host = name("x.test");
        for carrying in [
            "64:ff9b::7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "2001:0:a00:1::80ff:fffe",
            "64:ff9b::6464:64c8",
        ] {
            let denied = rules.check_addr(&host, ip(carrying)).unwrap_err();
            assert!(denied.0.contains("carrying"), "{carrying}: {denied}");
        }
        assert!(rules.check_addr(&host, ip("64:ff9b::c000:201")).is_ok());

        let mut rules = DestinationRules::default();
        rules.push(rule(
            false,
            Matcher::Addr(Cidr::parse("10.0.0.0/8").unwrap()),
            1,
        ));
        rules.push(rule(true, Matcher::All, 2));
        for carrying in [
            "64:ff9b::a00:1",
            "::ffff:10.1.2.3",
            "2002:a00:1::",
            "2001:0:c000:201::f5ff:fffe",
        ] {
            let denied = rules.check_addr(&host, ip(carrying)).unwrap_err();
            assert!(denied.0.contains("p.conf:1"), "{carrying}: {denied}");
        }
        assert!(rules.check_addr(&host, ip("64:ff9b::808:808")).is_ok());

        // An explicit address rule opens the IPv4 range for its IPv6 spellings too.
        let mut rules = DestinationRules::default();
        rules.push(rule(
            true,
            Matcher::Addr(Cidr::parse("127.0.0.0/8").unwrap()),
            1,
        ));
        assert!(rules.check_addr(&host, ip("64:ff9b::7f00:1")).is_ok());
    }
}
