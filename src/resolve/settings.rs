//! The `resolver` and `resolver_timeout` directives, set per server.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::MAX_TIME;
use crate::config::directive::{HTTP_SERVER, MANY, Spec};
use crate::config::values::{parse_flag, parse_ip_and_port, parse_time};
use crate::config::{ConfigError, Cx, Directive};

pub const DIRECTIVES: &[Spec] = &[
    Spec::used("resolver", HTTP_SERVER, (1, MANY), true),
    Spec::used("resolver_timeout", HTTP_SERVER, (1, 1), true),
];

/// How a server resolves names.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// `resolver` — `None` means the system configuration.
    pub resolver: Option<ResolverSettings>,
    /// `resolver_timeout`.
    pub timeout: Duration,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            resolver: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// `resolver ADDRESS ... [valid=TIME] [ipv4=on|off] [ipv6=on|off]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers, in the order to try them.
    pub servers: Vec<SocketAddr>,
    /// `valid=` — overrides the records' TTL for caching.
    pub valid: Option<Duration>,
    pub ipv4: bool,
    pub ipv6: bool,
}

impl DnsSettings {
    /// Applies one of [`DIRECTIVES`].
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        match directive.name.as_str() {
            "resolver" => self.resolver = Some(resolver(cx, directive)?),
            "resolver_timeout" => self.timeout = cx.time(directive)?,
            _ => return Err(cx.not_allowed(directive)),
        }
        Ok(())
    }
}

fn resolver(cx: &Cx, directive: &Directive) -> Result<ResolverSettings, ConfigError> {
    let mut settings = ResolverSettings {
        servers: Vec::new(),
        valid: None,
        ipv4: true,
        ipv6: true,
    };
    for arg in &directive.args {
        let flag = |value: &str| {
            parse_flag(value)
                .ok_or_else(|| cx.error(directive, format!("invalid parameter \"{arg}\"")))
        };
        match arg.split_once('=') {
            Some(("valid", v)) => {
                let valid = parse_time(v).filter(|t| !t.is_zero() && *t <= MAX_TIME);
                settings.valid =
                    Some(valid.ok_or_else(|| {
                        cx.error(directive, format!("invalid parameter \"{arg}\""))
                    })?);
            }
            Some(("ipv4", v)) => settings.ipv4 = flag(v)?,
            Some(("ipv6", v)) => settings.ipv6 = flag(v)?,
            Some(("status_zone", _)) => {}
            Some(_) => {
                return Err(cx.error(directive, format!("invalid parameter \"{arg}\"")));
            }
            None => {
                if let Some((ip, port)) = parse_ip_and_port(arg) {
                    settings
                        .servers
                        .push(SocketAddr::new(ip, port.unwrap_or(53)));
                    continue;
                }
                if !looks_like_a_name(arg) {
                    return Err(cx.error(
                        directive,
                        format!("invalid address \"{arg}\" in \"resolver\" directive: a name server is given by its IP address or name, optionally with a port"),
                    ));
                }
                settings.servers.extend(by_name(cx, directive, arg)?);
            }
        }
    }
    if settings.servers.is_empty() {
        return Err(cx.error(
            directive,
            "no name server address in \"resolver\" directive",
        ));
    }
    if !settings.ipv4 && !settings.ipv6 {
        return Err(cx.error(directive, "\"ipv4\" and \"ipv6\" cannot both be \"off\""));
    }
    Ok(settings)
}

/// `NAME[:PORT]` with a host name (not an IP address) and a port from 1.
fn looks_like_a_name(arg: &str) -> bool {
    let (host, port) = match arg.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (arg, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    port_ok
        && host.bytes().any(|b| b.is_ascii_alphabetic())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A name server given by name, as nginx allows: looked up once, when the file is read, by
/// the system's resolver (nginx does the same), every address it has becoming a server.
fn by_name(cx: &Cx, directive: &Directive, arg: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    use std::net::ToSocketAddrs;
    let with_port = match arg.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => arg.to_string(),
        _ => format!("{arg}:53"),
    };
    let found: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map(|addrs| addrs.collect())
        .unwrap_or_default();
    if found.is_empty() {
        return Err(cx.error(
            directive,
            format!(
                "host not found in resolver \"{arg}\" (a name server is given by its IP \
                 address, or by a name this machine can resolve)"
            ),
        ));
    }
    Ok(found)
}
