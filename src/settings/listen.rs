//! `listen`: the addresses a server block accepts connections on.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::Server;
use crate::config::directive::{MANY, SERVER, Spec};
use crate::config::values::{ListenError, parse_listen};
use crate::config::{ConfigError, Cx, Directive, Origin};

pub const DIRECTIVES: &[Spec] = &[Spec::used("listen", SERVER, (1, MANY), false)];

/// One listening address of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// Where the `listen` directive was written.
    pub origin: Origin,
    /// `backlog=N`; the default is the system's maximum.
    pub backlog: Option<u32>,
    /// `reuseport`: let several sockets share the port.
    pub reuseport: bool,
    /// `proxy_protocol`: every connection starts with a balancer's PROXY header.
    pub proxy_protocol: bool,
    /// `http2`: HTTP/2 is served here (as `http2 on;` in the block).
    pub http2: bool,
    /// `ssl`: every connection starts with a TLS handshake.
    pub ssl: bool,
}

/// `listen ADDRESS [PARAMETER...]`; a name may stand for several addresses.
pub fn set(
    cx: &mut Cx,
    directive: &Directive,
    listen: &mut Vec<Listen>,
) -> Result<(), ConfigError> {
    let address = &directive.args[0];
    if address.starts_with("unix:") {
        return Err(cx.error(
            directive,
            format!("unix sockets in \"{address}\" of the \"listen\" directive are not supported"),
        ));
    }
    let addrs = parse_listen(address).map_err(|e| {
        let what = match e {
            ListenError::InvalidPort => "invalid port",
            ListenError::HostNotFound => "host not found",
        };
        cx.error(
            directive,
            format!("{what} in \"{address}\" of the \"listen\" directive"),
        )
    })?;
    let mut backlog = None;
    let mut reuseport = false;
    let mut proxy_protocol = false;
    let mut http2 = false;
    let mut ssl = false;
    for param in &directive.args[1..] {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param.as_str(), None),
        };
        match (key, value) {
            ("default_server" | "default" | "bind", None) => {}
            ("reuseport", None) => reuseport = true,
            ("proxy_protocol", None) => proxy_protocol = true,
            ("http2", None) => http2 = true,
            ("ssl", None) => ssl = true,
            ("backlog", Some(v)) => {
                backlog = Some(
                    v.parse::<u32>()
                        .map_err(|_| cx.error(directive, format!("invalid backlog \"{v}\"")))?,
                );
            }
            ("ipv6only", Some("on")) => {}
            ("ipv6only", _) => {
                return Err(cx.error(
                    directive,
                    "\"ipv6only=off\" is not supported: an IPv6 listener serves only IPv6; \
                     add a second \"listen\" for the IPv4 address",
                ));
            }
            ("http3" | "quic", _) => {
                return Err(cx.error(
                    directive,
                    format!(
                        "the \"{param}\" parameter of the \"listen\" directive is not supported yet \
                         (sluice listens for plain-text proxy requests; HTTPS sites are still reached through CONNECT)"
                    ),
                ));
            }
            ("deferred" | "fastopen" | "so_keepalive" | "rcvbuf" | "sndbuf" | "setfib", _) => {
                cx.warn(
                    directive,
                    format!("the \"{key}\" parameter of the \"listen\" directive is ignored"),
                );
            }
            _ => {
                return Err(cx.error(directive, format!("invalid parameter \"{param}\"")));
            }
        }
    }
    for addr in addrs {
        listen.push(Listen {
            addr,
            origin: cx.origin(directive.line),
            backlog,
            reuseport,
            proxy_protocol,
            http2,
            ssl,
        });
    }
    Ok(())
}

/// A server listening on every address that admits every client (no closed `allow`/`deny`
/// list, no `auth_basic`, no required client certificate) is an open proxy to whoever can
/// reach the host: say so, once its whole block is known.
pub fn warn_if_open(cx: &mut Cx, server: &Server) {
    if !server.access.admits_anyone() || server.tls.requires_client_certificate() {
        return;
    }
    for listen in server
        .listen
        .iter()
        .filter(|l| l.addr.ip().is_unspecified())
    {
        cx.warn_at(
            &listen.origin,
            format!(
                "{} accepts every host that can reach it: anyone may use this proxy; \
                 restrict it with allow/deny, auth_basic, a firewall or a specific address,",
                listen.addr
            ),
        );
    }
}

/// Two blocks may not claim the same address: sluice would not know whose policy applies.
pub fn check_unique(servers: &[Server], file: &str) -> Result<(), ConfigError> {
    let mut seen: HashMap<SocketAddr, &Origin> = HashMap::new();
    for listen in servers.iter().flat_map(|s| &s.listen) {
        if listen.addr.port() == 0 {
            continue; // each gets its own free port
        }
        if let Some(first) = seen.insert(listen.addr, &listen.origin) {
            return Err(ConfigError::at(
                file,
                listen.origin.line,
                format!("a duplicate listen {} (first in {first})", listen.addr),
            ));
        }
    }
    Ok(())
}
