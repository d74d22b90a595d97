//! The forwarding directives, nginx's `proxy_*`: `proxy_pass` turns a location's forwarding
//! on, `proxy_http_allow` bounds the ports of a server, and the rest ([`Forwarding`]) may be
//! set at any level, a location starting with its server's.

use std::time::Duration;

use crate::config::directive::{HTTP_SERVER, HTTP_SERVER_LOCATION, LOCATION, MANY, Spec};
use crate::config::values::{PortList, SPLITS_A_LINE, splits_a_line};
use crate::config::{ConfigError, Cx, Directive};
use crate::template::Template;
use crate::variables::{Declared, Var};

/// `proxy_pass`, in a location.
pub const PASS_DIRECTIVES: &[Spec] = &[Spec::used("proxy_pass", LOCATION, (1, 1), true)];

/// `proxy_http_allow`, for a whole server.
pub const PORT_DIRECTIVES: &[Spec] =
    &[Spec::used("proxy_http_allow", HTTP_SERVER, (1, MANY), true)];

/// The settings of [`Forwarding`].
pub const DIRECTIVES: &[Spec] = &[
    Spec::used("proxy_set_header", HTTP_SERVER_LOCATION, (2, 2), false),
    Spec::used("proxy_connect_timeout", HTTP_SERVER_LOCATION, (1, 1), true),
    Spec::used("proxy_read_timeout", HTTP_SERVER_LOCATION, (1, 1), true),
    Spec::used("proxy_send_timeout", HTTP_SERVER_LOCATION, (1, 1), true),
    Spec::used("proxy_via", HTTP_SERVER_LOCATION, (1, 1), true),
    Spec::used(
        "proxy_ignore_client_abort",
        HTTP_SERVER_LOCATION,
        (1, 1),
        true,
    ),
    Spec::used("proxy_http_version", HTTP_SERVER_LOCATION, (1, 1), true),
];

/// `proxy_pass http://$http_host$request_uri;` — forward to the host the request names.
/// Any other target is refused: sluice is a forward proxy, not a reverse one.
pub fn proxy_pass(cx: &mut Cx, directive: &Directive, pass: &mut bool) -> Result<(), ConfigError> {
    let target = &directive.args[0];
    if !is_forward_proxy_pass(target) {
        return Err(cx.error(
            directive,
            format!(
                "proxy_pass \"{target}\" is not supported: sluice forwards each request to \
                 the host it names; write \"proxy_pass http://$http_host$request_uri;\""
            ),
        ));
    }
    *pass = true;
    Ok(())
}

/// `proxy_http_allow`: the ports a forwarded plain-HTTP request may reach.
pub fn proxy_http_allow(
    cx: &mut Cx,
    directive: &Directive,
    ports: &mut PortList,
) -> Result<(), ConfigError> {
    *ports = cx.port_list(directive)?;
    Ok(())
}

/// `http://$http_host$request_uri` and its `$host` variant: the forms that mean "forward to
/// wherever the request is going".
fn is_forward_proxy_pass(target: &str) -> bool {
    matches!(
        target,
        "http://$http_host$request_uri"
            | "http://$host$request_uri"
            | "http://$http_host"
            | "http://$host"
    )
}

/// Settings for forwarding plain-HTTP requests; nginx's `proxy_*` directives.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// `proxy_set_header NAME VALUE;`, in order. An empty value removes the header.
    pub set_headers: Vec<SetHeader>,
    /// `proxy_connect_timeout`.
    pub connect_timeout: Duration,
    /// `proxy_read_timeout` — longest wait for the next bytes from the origin.
    pub read_timeout: Duration,
    /// `proxy_send_timeout` — longest wait for the origin to take more bytes.
    pub send_timeout: Duration,
    /// `proxy_via` — add `Via: 1.1 sluice` to forwarded requests and responses.
    pub via: bool,
    /// `proxy_ignore_client_abort` — keep waiting for the origin's answer when the client
    /// leaves (nginx's default, `off`, ends the request there).
    pub ignore_client_abort: bool,
}

impl Default for Forwarding {
    /// nginx's defaults, and `Via` on as RFC 9110 asks of proxies.
    fn default() -> Self {
        Forwarding {
            set_headers: Vec::new(),
            connect_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            via: true,
            ignore_client_abort: false,
        }
    }
}

impl Forwarding {
    /// Applies one of [`DIRECTIVES`]. A level's first `proxy_set_header` replaces the ones it
    /// inherited, as in nginx.
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        let arg = directive.args[0].as_str();
        match directive.name.as_str() {
            "proxy_set_header" => {
                if cx.first_in_level("proxy_set_header") {
                    self.set_headers.clear();
                }
                let name = arg.to_string();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return Err(cx.error(directive, format!("invalid header name \"{name}\"")));
                }
                if splits_a_line(&directive.args[1]) {
                    return Err(cx.error(
                        directive,
                        format!("invalid value in \"proxy_set_header\" directive: {SPLITS_A_LINE}"),
                    ));
                }
                let declared = cx.state::<Declared>();
                let value = Template::parse(&directive.args[1], |name| {
                    HeaderVar::lookup(name).or_else(|| {
                        Var::lookup_declared(name, declared).map(HeaderVar::Other)
                    })
                })
                .map_err(|reason| cx.error(directive, reason))?;
                self.set_headers.push(SetHeader { name, value });
            }
            "proxy_connect_timeout" => self.connect_timeout = cx.time(directive)?,
            "proxy_read_timeout" => self.read_timeout = cx.time(directive)?,
            "proxy_send_timeout" => self.send_timeout = cx.time(directive)?,
            "proxy_via" => self.via = cx.flag(directive)?,
            "proxy_ignore_client_abort" => self.ignore_client_abort = cx.flag(directive)?,
            "proxy_http_version" => match arg {
                "1.1" => {}
                "1.0" => cx.warn(
                    directive,
                    "\"proxy_http_version 1.0\" is ignored: sluice speaks HTTP/1.1 to origins so that their connections can be reused,",
                ),
                _ => return Err(cx.error(directive, format!("invalid value \"{arg}\" in \"proxy_http_version\" directive"))),
            },
            _ => return Err(cx.not_allowed(directive)),
        }
        Ok(())
    }
}

/// One `proxy_set_header`.
#[derive(Debug, Clone)]
pub struct SetHeader {
    pub name: String,
    pub value: Template<HeaderVar>,
}

/// Variables available in `proxy_set_header` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderVar {
    /// `$http_host`: the request's authority. RFC 9112 §3.2.2 makes the URI's authority the
    /// Host of an absolute-form request, so this is never a different Host header's value.
    HttpHost,
    /// `$host`: the host without its port.
    Host,
    /// `$remote_addr`, `$remote_port`: the client.
    RemoteAddr,
    RemotePort,
    /// `$proxy_add_x_forwarded_for`: the client's X-Forwarded-For with its address appended.
    ProxyAddXForwardedFor,
    /// `$request_uri`: the origin-form path and query.
    RequestUri,
    /// `$request_method`.
    RequestMethod,
    /// `$http_NAME`: the request header NAME (underscores stand for dashes).
    Http(String),
    /// Any other variable (`set`, `map`, `$request_port`, ...), read from the request's record.
    Other(Var),
}

impl HeaderVar {
    /// The variable a name stands for, if it is one `proxy_set_header` knows.
    pub fn lookup(name: &str) -> Option<HeaderVar> {
        Some(match name {
            "http_host" => HeaderVar::HttpHost,
            "host" => HeaderVar::Host,
            "remote_addr" => HeaderVar::RemoteAddr,
            "remote_port" => HeaderVar::RemotePort,
            "proxy_add_x_forwarded_for" => HeaderVar::ProxyAddXForwardedFor,
            "request_uri" => HeaderVar::RequestUri,
            "request_method" => HeaderVar::RequestMethod,
            _ => HeaderVar::Http(name.strip_prefix("http_")?.replace('_', "-")),
        })
    }
}
