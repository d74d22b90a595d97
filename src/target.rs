//! The destination of a CONNECT: RFC 9110 authority-form, `host:port` or `[v6]:port`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::ProxyError;

/// Where a client asked to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

/// A host as the client named it: an address literal never goes through DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The longest DNS name (RFC 1035), without a trailing dot.
const MAX_NAME_LEN: usize = 253;

impl Target {
    /// Parses the request-target of a CONNECT. Anything but `host:port` is a `400`.
    pub fn parse_authority(text: &str) -> Result<Target, ProxyError> {
        let bad =
            |why: &str| ProxyError::BadRequest(format!("invalid CONNECT target \"{text}\": {why}"));
        if text.contains(['/', '?', '#']) {
            return Err(bad("expected host:port, not a URL"));
        }
        Target::parse_host_port(text, None).map_err(bad)
    }

    /// Parses `host[:port]` or `[v6][:port]`; without a port, `default_port` applies (an
    /// error if there is none). An empty port after the colon also means the default.
    pub fn parse_host_port(text: &str, default_port: Option<u16>) -> Result<Target, &'static str> {
        if text.contains('@') {
            return Err("user information is not allowed");
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (literal, after) = rest.split_once(']').ok_or("unclosed \"[\"")?;
            let ip: Ipv6Addr = literal.parse().map_err(|_| "invalid IPv6 address")?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or("invalid characters after \"]\"")?,
                ),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            };
            if host.is_empty() {
                return Err("the host is empty");
            }
            if host.contains(':') {
                return Err("an IPv6 address must be written in brackets");
            }
            (parse_host(host).ok_or("invalid host name")?, port)
        };
        let port = match port {
            Some("") if default_port.is_some() => default_port,
            Some(port) => {
                Some(parse_port(port).ok_or("the port must be a number from 1 to 65535")?)
            }
            None => default_port,
        };
        let port = port.ok_or("a port is required")?;
        Ok(Target { host, port })
    }
}

fn parse_host(host: &str) -> Option<Host> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(Host::Ip(IpAddr::V4(ip)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| Host::Name(host.to_ascii_lowercase()))
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_and_literals() {
        let t = Target::parse_authority("Example.ORG:443").unwrap();
        assert_eq!(t.host, Host::Name("example.org".into()));
        assert_eq!(t.port, 443);
        let t = Target::parse_authority("127.0.0.1:8443").unwrap();
        assert_eq!(t.host, Host::Ip("127.0.0.1".parse().unwrap()));
        let t = Target::parse_authority("[::1]:443").unwrap();
        assert_eq!(t.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(t.to_string(), "[::1]:443");
        assert!(Target::parse_authority("example.org.:443").is_ok());
        assert!(Target::parse_authority("_srv.example:443").is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "example.org",
            "example.org:",
            ":443",
            "example.org:0",
            "example.org:65536",
            "example.org:99999999",
            "example.org:+443",
            "example.org:https",
            "example.org:443/path",
            "http://example.org:443",
            "user@example.org:443",
            "::1:443",
            "[::1]",
            "[::1]443",
            "[nope]:443",
            "exa mple.org:443",
            "a..b:443",
            "",
        ] {
            assert!(
                matches!(Target::parse_authority(bad), Err(ProxyError::BadRequest(_))),
                "{bad:?} was accepted"
            );
        }
    }
}
