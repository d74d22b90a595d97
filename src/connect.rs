//! The CONNECT method's settings: the directives of nginx's proxy_connect module and of
//! nginx 1.31's tunnel module (`tunnel_*`), which [`crate::connection`] acts on before handing
//! the connection to [`crate::tunnel`]; and [`Plan`], what they come to for one request once
//! its `set` and `map` variables are known.

use std::net::IpAddr;
use std::time::Duration;

use crate::access_log::Entry;
use crate::config::directive::{
    Context, HTTP_SERVER, HTTP_SERVER_LOCATION, HTTP_SERVER_USERS, MANY, SERVER, Spec,
};
use crate::config::values::{PortList, parse_ip, parse_ip_and_port, parse_time};
use crate::config::{ConfigError, Cx, Directive};
use crate::error::ProxyError;
use crate::target::Target;
use crate::template::Template;
use crate::variables::{self, Declared, Var};

/// Why a `tunnel_*` directive is accepted only at server level.
const SERVER_ONLY: &str = "in a location is not supported: sluice serves CONNECT for the whole \
                           server; write it in the server block";

pub const DIRECTIVES: &[Spec] = &[
    Spec::used("proxy_connect", SERVER, (0, 0), true),
    Spec::used("proxy_connect_allow", HTTP_SERVER_USERS, (1, MANY), true),
    Spec::used("proxy_connect_connect_timeout", HTTP_SERVER, (1, 1), true),
    Spec::used("proxy_connect_data_timeout", HTTP_SERVER, (1, 1), true),
    Spec::used("proxy_connect_read_timeout", HTTP_SERVER, (1, 1), true),
    Spec::used("proxy_connect_send_timeout", HTTP_SERVER, (1, 1), true),
    Spec::used("proxy_connect_response", HTTP_SERVER, (1, 1), true),
    Spec::used("proxy_connect_address", HTTP_SERVER, (1, 1), true),
    Spec::used("proxy_connect_bind", HTTP_SERVER, (1, 2), true),
    Spec::used(
        "tunnel_pass",
        &[Context::Server, Context::Location],
        (0, 1),
        true,
    )
    .refused_in(Context::Location, SERVER_ONLY),
    Spec::used("tunnel_connect_timeout", HTTP_SERVER_LOCATION, (1, 1), true)
        .refused_in(Context::Location, SERVER_ONLY),
    Spec::used("tunnel_read_timeout", HTTP_SERVER_LOCATION, (1, 1), true)
        .refused_in(Context::Location, SERVER_ONLY),
    Spec::used("tunnel_send_timeout", HTTP_SERVER_LOCATION, (1, 1), true)
        .refused_in(Context::Location, SERVER_ONLY),
    Spec::used("tunnel_bind", HTTP_SERVER_LOCATION, (1, 2), true)
        .refused_in(Context::Location, SERVER_ONLY),
    Spec::used("tunnel_buffer_size", HTTP_SERVER_LOCATION, (1, 1), true)
        .refused_in(Context::Location, SERVER_ONLY),
    Spec::used(
        "tunnel_socket_keepalive",
        HTTP_SERVER_LOCATION,
        (1, 1),
        true,
    )
    .refused_in(Context::Location, SERVER_ONLY),
    Spec::ignored(
        "tunnel_socket_rcvbuf",
        false,
        "sluice leaves socket buffers to the kernel",
    ),
    Spec::ignored(
        "tunnel_socket_sndbuf",
        false,
        "sluice leaves socket buffers to the kernel",
    ),
    Spec::ignored(
        "tunnel_send_lowat",
        false,
        "sluice leaves socket buffers to the kernel",
    ),
    Spec::ignored(
        "tunnel_next_upstream",
        false,
        "sluice tries every address of a name in turn",
    ),
    Spec::ignored(
        "tunnel_next_upstream_tries",
        false,
        "sluice tries every address of a name in turn",
    ),
    Spec::ignored(
        "tunnel_next_upstream_timeout",
        false,
        "\"tunnel_connect_timeout\" bounds reaching the upstream",
    ),
];

/// How a server answers CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// `proxy_connect;` — whether CONNECT is served at all.
    pub enabled: bool,
    /// `proxy_connect_allow` — the ports a CONNECT may reach.
    pub ports: PortList,
    /// `proxy_connect_connect_timeout` — bound on establishing the upstream connection.
    pub connect_timeout: Duration,
    /// `proxy_connect_data_timeout` — longest pause between two reads or writes in a tunnel.
    pub data_timeout: Duration,
    /// `proxy_connect_response` — replaces the standard `200 Connection Established` head.
    pub response: Option<Template<Var>>,
    /// `proxy_connect_address` — dial this address instead of the resolved one.
    pub address: Option<(IpAddr, Option<u16>)>,
    /// `proxy_connect_address` with variables, or `tunnel_pass ADDRESS`: where to dial,
    /// worked out per request (`host:port` or an IP; empty means the client's target).
    pub address_var: Option<Template<Var>>,
    /// `proxy_connect_bind` — the source address of upstream connections, forwarded ones too.
    pub bind: Option<IpAddr>,
    /// `proxy_connect_bind` or `tunnel_bind` with variables: the source address of a
    /// tunnel's upstream connection, worked out per request (empty means none).
    pub bind_var: Option<Template<Var>>,
    /// `tunnel_pass` — CONNECT served the nginx 1.31 way: any port unless
    /// `proxy_connect_allow` is written too (the ACL is the operator's `map`s).
    pub tunnel_pass: bool,
    /// Whether `proxy_connect_allow` was written (it then holds for `tunnel_pass` too).
    pub ports_written: bool,
}

impl Default for ConnectSettings {
    /// The proxy_connect module's defaults: off, and HTTPS and NNTPS ports only.
    fn default() -> Self {
        ConnectSettings {
            enabled: false,
            ports: PortList::Ranges(vec![(443, 443), (563, 563)]),
            connect_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(60),
            response: None,
            address: None,
            address_var: None,
            bind: None,
            bind_var: None,
            tunnel_pass: false,
            ports_written: false,
        }
    }
}

impl ConnectSettings {
    /// Applies one of [`DIRECTIVES`].
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        let arg = directive
            .args
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        match directive.name.as_str() {
            "proxy_connect" => self.enabled = true,
            "proxy_connect_allow" => {
                self.ports = cx.port_list(directive)?;
                self.ports_written = true;
            }
            "proxy_connect_connect_timeout" | "tunnel_connect_timeout" => {
                self.connect_timeout = cx.time(directive)?;
            }
            "proxy_connect_data_timeout" | "tunnel_read_timeout" => {
                self.data_timeout = cx.time(directive)?;
            }
            "tunnel_send_timeout" => {
                cx.time(directive)?;
                cx.warn(
                    directive,
                    "\"tunnel_send_timeout\" has no effect in sluice: \"tunnel_read_timeout\" \
                     bounds the pause in both directions",
                );
            }
            "tunnel_pass" => {
                self.enabled = true;
                self.tunnel_pass = true;
                if let Some(address) = directive.args.first() {
                    self.address = None;
                    self.address_var = Some(template(cx, directive, address)?);
                }
            }
            "tunnel_bind" => {
                bind_extra(cx, directive)?;
                self.bind = None;
                self.bind_var = match arg {
                    "off" => None,
                    _ => Some(template(cx, directive, arg)?),
                };
            }
            "tunnel_buffer_size" => {
                cx.warn(
                    directive,
                    "\"tunnel_buffer_size\" has no effect in sluice: tunnels splice between \
                     sockets or use sluice's own buffer",
                );
            }
            "tunnel_socket_keepalive" => {
                cx.flag(directive)?;
                cx.warn(
                    directive,
                    "\"tunnel_socket_keepalive\" has no effect in sluice: \
                     \"tunnel_read_timeout\" ends idle tunnels",
                );
            }
            "proxy_connect_read_timeout" => {
                self.data_timeout = cx.time(directive)?;
                cx.warn(
                    directive,
                    "\"proxy_connect_read_timeout\" is deprecated, use \"proxy_connect_data_timeout\"",
                );
            }
            "proxy_connect_send_timeout" => {
                cx.time(directive)?;
                cx.warn(
                    directive,
                    "\"proxy_connect_send_timeout\" has no function (as in the proxy_connect module); \
                     \"proxy_connect_data_timeout\" bounds both directions",
                );
            }
            "proxy_connect_response" => self.response = Some(response(cx, directive)?),
            "proxy_connect_address" => {
                (self.address, self.address_var) = (None, None);
                match arg {
                    "off" => {}
                    _ if arg.contains('$') => {
                        self.address_var = Some(template(cx, directive, arg)?);
                    }
                    _ => match parse_ip_and_port(arg) {
                        Some(address) => self.address = Some(address),
                        None if Target::parse_host_port(arg, Some(443)).is_ok() => {
                            self.address_var = Some(template(cx, directive, arg)?);
                        }
                        None => {
                            return Err(cx.error(
                                directive,
                                format!("invalid address \"{arg}\" in \"proxy_connect_address\" directive: an IP address or a host name, optionally with a port, is needed"),
                            ));
                        }
                    },
                }
            }
            "proxy_connect_bind" => {
                bind_extra(cx, directive)?;
                self.bind_var = None;
                self.bind = match arg {
                    "off" => None,
                    _ if arg.contains('$') => {
                        self.bind_var = Some(template(cx, directive, arg)?);
                        None
                    }
                    _ => Some(parse_ip(arg).ok_or_else(|| {
                        cx.error(
                            directive,
                            format!("invalid address \"{arg}\" in \"proxy_connect_bind\" directive: an IP address is needed"),
                        )
                    })?),
                };
            }
            _ => return Err(cx.not_allowed(directive)),
        }
        Ok(())
    }
}

/// `proxy_connect_bind ADDRESS transparent` / `tunnel_bind`: the second parameter is refused.
fn bind_extra(cx: &Cx, directive: &Directive) -> Result<(), ConfigError> {
    match directive.args.get(1) {
        Some(extra) => Err(cx.error(
            directive,
            format!(
                "the \"{extra}\" parameter of \"{}\" is not supported",
                directive.name
            ),
        )),
        None => Ok(()),
    }
}

/// A directive's argument as a template of the file's variables.
fn template(cx: &mut Cx, directive: &Directive, text: &str) -> Result<Template<Var>, ConfigError> {
    variables::parse(text, cx.state::<Declared>()).map_err(|reason| cx.error(directive, reason))
}

/// `proxy_connect_response`: a whole response head, with variables.
fn response(cx: &mut Cx, directive: &Directive) -> Result<Template<Var>, ConfigError> {
    let text = &directive.args[0];
    if !text.ends_with("\r\n\r\n") {
        return Err(cx.error(
            directive,
            "\"proxy_connect_response\" must be a whole response head ending in \"\\r\\n\\r\\n\"",
        ));
    }
    // The head's own line breaks are CRLF; a bare CR or LF, an empty line before the end
    // (the client would read what follows as tunnel data) or a NUL would be misread.
    let lines = &text[..text.len() - 4];
    if text.contains('\0')
        || lines
            .split("\r\n")
            .any(|l| l.is_empty() || l.contains(['\r', '\n']))
    {
        return Err(cx.error(
            directive,
            "\"proxy_connect_response\" may break lines only with \"\\r\\n\", may not hold an \
             empty line before its end, and may not contain NUL",
        ));
    }
    template(cx, directive, text)
}

/// What the CONNECT directives come to for one request, its `set` and `map` variables read.
#[derive(Debug)]
pub struct Plan {
    /// Where to go: the client's target, or the name `proxy_connect_address` / `tunnel_pass`
    /// gave.
    pub target: Target,
    /// An address that skips resolving.
    pub address: Option<(IpAddr, Option<u16>)>,
    pub bind: Option<IpAddr>,
    pub connect_timeout: Duration,
    pub data_timeout: Duration,
    /// `set $proxy_connect_response`: the head to answer with instead of the configured one.
    pub response: Option<String>,
}

impl ConnectSettings {
    /// The plan for a CONNECT to `target`, with the request's variables. `set` may change the
    /// proxy_connect module's timeouts and response per request, as with that module; an
    /// address or timeout that does not parse is a `502`.
    pub fn plan(&self, target: &Target, entry: &Entry) -> Result<Plan, ProxyError> {
        let mut plan = Plan {
            target: target.clone(),
            address: self.address,
            bind: self.bind,
            connect_timeout: self.connect_timeout,
            data_timeout: self.data_timeout,
            response: entry.vars.get("proxy_connect_response").map(str::to_string),
        };
        let invalid =
            |what: &str, value: &str| ProxyError::BadGateway(format!("invalid {what} \"{value}\""));
        if let Some(template) = &self.address_var {
            let value = variables::render(template, entry);
            if let Some(address) = parse_ip_and_port(&value).or_else(|| dotted_quad(&value)) {
                plan.address = Some(address);
            } else if !value.is_empty() {
                plan.target = Target::parse_host_port(&value, Some(target.port))
                    .map_err(|_| invalid("proxy_connect_address", &value))?;
            }
        }
        if let Some(template) = &self.bind_var {
            let value = variables::render(template, entry);
            if !value.is_empty() {
                plan.bind =
                    Some(parse_ip(&value).ok_or_else(|| invalid("proxy_connect_bind", &value))?);
            }
        }
        let time = |name: &str| {
            entry.vars.get(name).map(|value| {
                parse_time(value)
                    .filter(|t| !t.is_zero())
                    .ok_or_else(|| invalid(name, value))
            })
        };
        if let Some(timeout) = time("proxy_connect_connect_timeout") {
            plan.connect_timeout = timeout?;
        }
        for name in ["proxy_connect_read_timeout", "proxy_connect_data_timeout"] {
            if let Some(timeout) = time(name) {
                plan.data_timeout = timeout?;
            }
        }
        Ok(plan)
    }
}

/// `IPv4[:PORT]` where an octet may have leading zeros (`127.0.0.01:8082`), as nginx's
/// `inet_addr` reads it and proxy_connect configurations write it; each octet is decimal.
fn dotted_quad(text: &str) -> Option<(IpAddr, Option<u16>)> {
    let (ip, port) = match text.split_once(':') {
        Some((ip, port)) => (ip, Some(port.parse().ok()?)),
        None => (text, None),
    };
    let octets: Vec<u8> = ip
        .split('.')
        .map(|o| {
            o.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| o.parse().ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    let octets: [u8; 4] = octets.try_into().ok()?;
    Some((IpAddr::from(octets), port))
}
