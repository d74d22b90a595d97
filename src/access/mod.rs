//! Who may use the proxy and where it may go. Pure decisions over addresses and names, made
//! before anything is resolved or dialled where possible; the connection acts on them.

pub mod auth;
pub mod cidr;
mod destination;
mod embedded;
pub mod htpasswd;
mod md5_crypt;
mod own;
pub mod settings;
pub mod users;

pub use auth::Auth;
pub use cidr::Cidr;
pub use destination::{DestinationRule, DestinationRules, HostPattern, Matcher, Verdict};
pub use own::{OwnListeners, host_addresses};

use std::net::IpAddr;

use crate::config::Origin;

/// nginx's `allow` / `deny` for client addresses: first match wins; with no match (or no
/// rules) the client is allowed, so a closed list ends in `deny all;`.
#[derive(Debug, Clone, Default)]
pub struct ClientRules {
    rules: Vec<ClientRule>,
}

#[derive(Debug, Clone)]
struct ClientRule {
    allow: bool,
    /// `None` is `all`.
    range: Option<Cidr>,
    origin: Origin,
}

impl ClientRules {
    pub fn push(&mut self, allow: bool, range: Option<Cidr>, origin: Origin) {
        self.rules.push(ClientRule {
            allow,
            range,
            origin,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A closed list: it has a `deny all`, so a client no earlier rule names is refused.
    pub fn is_closed(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| !rule.allow && rule.range.is_none())
    }

    /// `Err` names the `deny` rule that refused `client`.
    pub fn check(&self, client: IpAddr) -> Result<(), &Origin> {
        let matched = self
            .rules
            .iter()
            .find(|rule| rule.range.is_none_or(|range| range.contains(client)));
        match matched {
            Some(rule) if !rule.allow => Err(&rule.origin),
            _ => Ok(()),
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

    #[test]
    fn first_match_wins_and_no_match_allows() {
        let mut rules = ClientRules::default();
        rules.push(false, Some(Cidr::parse("10.0.0.7").unwrap()), origin(1));
        rules.push(true, Some(Cidr::parse("10.0.0.0/8").unwrap()), origin(2));
        rules.push(false, None, origin(3));
        assert_eq!(
            rules.check("10.0.0.7".parse().unwrap()).unwrap_err().line,
            1
        );
        assert!(rules.check("10.9.9.9".parse().unwrap()).is_ok());
        assert!(rules.check("::ffff:10.9.9.9".parse().unwrap()).is_ok());
        assert_eq!(
            rules.check("192.0.2.1".parse().unwrap()).unwrap_err().line,
            3
        );
        assert!(
            ClientRules::default()
                .check("192.0.2.1".parse().unwrap())
                .is_ok()
        );
    }
}
