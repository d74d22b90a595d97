//! The CONNECT method's settings: the directives of nginx's proxy_connect module, which
//! [`crate::connection`] acts on before handing the connection to [`crate::tunnel`].

use std::net::IpAddr;
use std::time::Duration;

use crate::config::directive::{HTTP_SERVER, HTTP_SERVER_USERS, MANY, SERVER, Spec};
use crate::config::values::{PortList, parse_ip, parse_ip_and_port};
use crate::config::{ConfigError, Cx, Directive};
use crate::template::Template;

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
    pub response: Option<Template<ConnectVar>>,
    /// `proxy_connect_address` — dial this address instead of the resolved one.
    pub address: Option<(IpAddr, Option<u16>)>,
    /// `proxy_connect_bind` — the source address of upstream connections, forwarded ones too.
    pub bind: Option<IpAddr>,
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
            bind: None,
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
            "proxy_connect_allow" => self.ports = cx.port_list(directive)?,
            "proxy_connect_connect_timeout" => self.connect_timeout = cx.time(directive)?,
            "proxy_connect_data_timeout" => self.data_timeout = cx.time(directive)?,
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
                self.address = match arg {
                    "off" => None,
                    _ if arg.contains('$') => {
                        return Err(cx.error(directive, "variables in \"proxy_connect_address\" are not supported"));
                    }
                    _ => Some(parse_ip_and_port(arg).ok_or_else(|| {
                        cx.error(
                            directive,
                            format!("invalid address \"{arg}\" in \"proxy_connect_address\" directive: an IP address, optionally with a port, is needed"),
                        )
                    })?),
                };
            }
            "proxy_connect_bind" => {
                if directive.args.get(1).is_some() {
                    return Err(cx.error(
                        directive,
                        format!(
                            "the \"{}\" parameter of \"proxy_connect_bind\" is not supported",
                            directive.args[1]
                        ),
                    ));
                }
                self.bind = match arg {
                    "off" => None,
                    _ if arg.contains('$') => {
                        return Err(cx.error(directive, "variables in \"proxy_connect_bind\" are not supported"));
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

/// `proxy_connect_response`: a whole response head, with [`ConnectVar`]s.
fn response(cx: &Cx, directive: &Directive) -> Result<Template<ConnectVar>, ConfigError> {
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
    Template::parse(text, ConnectVar::lookup).map_err(|reason| cx.error(directive, reason))
}

/// Variables available in `proxy_connect_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectVar {
    /// `$connect_host`: the host as the client wrote it.
    Host,
    /// `$connect_port`.
    Port,
    /// `$connect_addr`: the upstream address actually connected to, `ip:port`.
    Addr,
}

impl ConnectVar {
    fn lookup(name: &str) -> Option<ConnectVar> {
        match name {
            "connect_host" => Some(ConnectVar::Host),
            "connect_port" => Some(ConnectVar::Port),
            "connect_addr" => Some(ConnectVar::Addr),
            _ => None,
        }
    }
}
